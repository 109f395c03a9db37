"""GET /api/v1/audit-events/: owner sees their tenant's events, another tenant and outsiders see none."""
from __future__ import annotations

import datetime

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from rest_framework.test import APIClient

from audit.models import AuditEvent
from audit.services import record_event
from cms.models import ApiToken, Membership, ServiceAccount

pytestmark = pytest.mark.django_db
URL = "/api/v1/audit-events/"


def _member(username, tenant, role):
    user = get_user_model().objects.create_user(username, password="not-used-in-tests-0")
    Membership.objects.create(user=user, tenant=tenant, role=role)
    return user


def _client(user=None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client


@pytest.fixture
def events(tenant, other_tenant):
    return {
        "acme_key": record_event(action="keys.key_changed", tenant=tenant, card_uid="04A1B2C3D4E5F6",
                                 aid="F0A001", key_no=1, key_version=2, job_id="job-1"),
        "acme_fail": record_event(action="job.failed", tenant=tenant, result="failure", job_id="job-2"),
        "globex": record_event(action="keys.key_changed", tenant=other_tenant, card_uid="04FFFFFFFFFFFF"),
        "system": record_event(action="auth.login_failed", result="failure", actor_type="anonymous",
                               actor_name="mallory"),
    }


def _ids(response) -> set[int]:
    assert response.status_code == 200, response.content
    return {row["id"] for row in response.json()["results"]}


class TestAuditEventAccess:
    def test_owner_sees_only_their_tenants_events(self, tenant, events):
        owner = _member("alice", tenant, "admin")
        assert _ids(_client(owner).get(URL)) == {events["acme_key"].pk, events["acme_fail"].pk}

    def test_auditor_of_the_tenant_sees_them_too(self, tenant, events):
        auditor = _member("audrey", tenant, "auditor")
        assert _ids(_client(auditor).get(URL)) == {events["acme_key"].pk, events["acme_fail"].pk}

    def test_operator_without_audit_role_sees_nothing(self, tenant, events):
        operator = _member("oscar", tenant, "operator")
        assert _ids(_client(operator).get(URL)) == set()

    def test_member_of_another_tenant_sees_only_their_own(self, other_tenant, events):
        other = _member("gus", other_tenant, "admin")
        assert _ids(_client(other).get(URL)) == {events["globex"].pk}

    def test_member_of_another_tenant_cannot_read_an_event_by_id(self, other_tenant, events):
        other = _member("gus", other_tenant, "admin")
        assert _client(other).get(f"{URL}{events['acme_key'].pk}/").status_code == 404

    def test_events_without_tenant_are_for_superusers_only(self, tenant, events):
        owner = _member("alice", tenant, "admin")
        assert _client(owner).get(f"{URL}{events['system'].pk}/").status_code == 404
        root = get_user_model().objects.create_superuser("root", password="not-used-in-tests-0")
        assert _ids(_client(root).get(URL)) == {event.pk for event in events.values()}

    def test_anonymous_caller_is_refused(self, events):
        response = _client().get(URL)
        assert response.status_code in (401, 403)
        assert "results" not in response.json()

    def test_outsider_without_any_membership_sees_nothing(self, events):
        nobody = get_user_model().objects.create_user("nobody", password="not-used-in-tests-0")
        assert _ids(_client(nobody).get(URL)) == set()
        assert _client(nobody).get(f"{URL}{events['acme_key'].pk}/").status_code == 404

    def test_auditor_service_account_with_api_token_reads_its_tenant(self, tenant, events):
        account = ServiceAccount.objects.create(tenant=tenant, name="siem", role="auditor")
        _, plain = ApiToken.objects.issue(account)
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {plain}")
        assert _ids(client.get(URL)) == {events["acme_key"].pk, events["acme_fail"].pk}

    def test_mes_service_account_cannot_read_the_audit_trail(self, tenant, events):
        account = ServiceAccount.objects.create(tenant=tenant, name="mes", role="mes")
        _, plain = ApiToken.objects.issue(account)
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {plain}")
        assert _ids(client.get(URL)) == set()

    def test_the_endpoint_is_read_only(self, tenant, events):
        owner = _member("alice", tenant, "admin")
        client = _client(owner)
        detail = f"{URL}{events['acme_key'].pk}/"
        assert client.post(URL, {"action": "x"}, format="json").status_code == 405
        assert client.put(detail, {"result": "x"}, format="json").status_code == 405
        assert client.patch(detail, {"result": "x"}, format="json").status_code == 405
        assert client.delete(detail).status_code == 405
        assert AuditEvent.objects.count() == 4


class TestAuditEventFilters:
    @pytest.fixture
    def owner_client(self, tenant, events):
        return _client(_member("alice", tenant, "admin"))

    def test_filter_by_action_result_and_job(self, owner_client, events):
        assert _ids(owner_client.get(URL, {"action": "job.failed"})) == {events["acme_fail"].pk}
        assert _ids(owner_client.get(URL, {"result": "success"})) == {events["acme_key"].pk}
        assert _ids(owner_client.get(URL, {"job_id": "job-1"})) == {events["acme_key"].pk}

    def test_filter_by_card_uid_and_aid_in_any_case(self, owner_client, events):
        assert _ids(owner_client.get(URL, {"card_uid": "04a1b2c3d4e5f6"})) == {events["acme_key"].pk}
        assert _ids(owner_client.get(URL, {"aid": "f0a001"})) == {events["acme_key"].pk}

    def test_filter_never_widens_the_scope(self, owner_client, events):
        assert _ids(owner_client.get(URL, {"card_uid": "04FFFFFFFFFFFF"})) == set()
        assert _ids(owner_client.get(URL, {"tenant": "globex"})) == set()

    def test_filter_by_time_range(self, owner_client, events):
        after_all = timezone.now() + datetime.timedelta(seconds=1)
        at = events["acme_fail"].created_at
        assert _ids(owner_client.get(URL, {"since": after_all.isoformat()})) == set()
        assert _ids(owner_client.get(URL, {"since": at.isoformat()})) == {events["acme_fail"].pk}
        assert _ids(owner_client.get(URL, {"until": at.isoformat()})) == {events["acme_key"].pk}

    def test_bad_filters_are_named_in_a_400(self, owner_client):
        response = owner_client.get(URL, {"since": "yesterday", "card_uid": "not-hex"})
        assert response.status_code == 400
        assert set(response.json()) == {"since", "card_uid"}
        now = timezone.now().isoformat()
        assert owner_client.get(URL, {"since": now, "until": now}).status_code == 400

    def test_newest_first_with_chain_fields(self, owner_client, events):
        rows = owner_client.get(URL).json()["results"]
        assert [row["id"] for row in rows] == [events["acme_fail"].pk, events["acme_key"].pk]
        assert rows[0]["prev_hash"] == events["acme_key"].hash and len(rows[0]["hash"]) == 64
        assert (rows[1]["key_no"], rows[1]["key_version"], rows[1]["tenant_slug"]) == (1, 2, "acme")
