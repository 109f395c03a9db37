"""Writes through the API: the owner may, a member of another tenant and an anonymous caller may not."""

from __future__ import annotations

import pytest

from audit.models import AuditEvent
from cards.models import Application, Card, CardProfile, Station, Tenant
from cms.models import ApiToken, Membership, ServiceAccount
from tests.cards.fixtures import client_for, desfire_spec, jcop_spec


@pytest.fixture
def profile(acme, masters):
    return CardProfile.objects.create(tenant=acme, name="transit", chip_family="desfire", spec=desfire_spec())


@pytest.fixture
def card(acme):
    return Card.objects.create(tenant=acme, uid="04112233445566", chip_type="desfire_ev3")


class TestTenants:
    body = {
        "slug": "initech",
        "name": "Initech",
        "gp_aid_prefix": "A00000061700D00D0001",
        "desfire_aid_first": 0xF0C000,
        "desfire_aid_last": 0xF0CFFF,
    }

    def test_superuser_creates_a_tenant(self, superuser, acme):
        response = client_for(superuser).post("/api/v1/tenants/", self.body, format="json")
        assert response.status_code == 201, response.json()
        assert response.json()["desfire_aid_range"] == "F0C000-F0CFFF"

    def test_overlapping_namespace_is_a_400_naming_the_field(self, superuser, acme):
        body = {**self.body, "gp_aid_prefix": "A00000061700CAFE000101"}
        response = client_for(superuser).post("/api/v1/tenants/", body, format="json")
        assert response.status_code == 400
        assert "overlaps tenant acme" in response.json()["gp_aid_prefix"][0]

    def test_tenant_admin_cannot_create_or_edit_a_tenant(self, owner, acme):
        client = client_for(owner)
        assert client.post("/api/v1/tenants/", self.body, format="json").status_code == 403
        assert client.patch(f"/api/v1/tenants/{acme.pk}/", {"name": "x"}, format="json").status_code == 403

    def test_member_of_another_tenant_cannot_edit_it(self, member_of_other, acme):
        response = client_for(member_of_other).patch(
            f"/api/v1/tenants/{acme.pk}/", {"name": "x"}, format="json"
        )
        assert response.status_code == 404

    def test_anonymous_cannot_create(self, db):
        assert client_for(None).post("/api/v1/tenants/", self.body, format="json").status_code == 401
        assert not Tenant.objects.exists()


class TestProfiles:
    def test_owner_creates_versions_of_a_profile(self, owner, masters):
        client = client_for(owner)
        first = client.post("/api/v1/profiles/", {"name": "transit", "spec": desfire_spec()}, format="json")
        second = client.post("/api/v1/profiles/", {"name": "transit", "spec": jcop_spec()}, format="json")
        assert (first.status_code, second.status_code) == (201, 201)
        assert (first.json()["version"], second.json()["version"]) == (1, 2)
        assert second.json()["chip_family"] == "jcop"

    def test_spec_errors_name_the_json_path(self, owner, masters):
        spec = desfire_spec()
        spec["applications"][0]["aid"] = "F0B001"
        response = client_for(owner).post(
            "/api/v1/profiles/", {"name": "transit", "spec": spec}, format="json"
        )
        assert response.status_code == 400
        assert response.json() == {
            "spec": {"applications[0].aid": ["outside the tenant's DESFire AID range F0A000-F0AFFF"]}
        }

    def test_oversized_spec_is_a_400(self, owner, masters):
        spec = desfire_spec()
        spec["applications"][0]["files"][0]["initial_data_hex"] = "00" * 40000
        response = client_for(owner).post("/api/v1/profiles/", {"name": "big", "spec": spec}, format="json")
        assert response.status_code == 400
        assert response.json()["spec"] == {"spec": ["is larger than 64 KiB"]}

    def test_validate_is_a_dry_run(self, owner, masters):
        response = client_for(owner).post(
            "/api/v1/profiles/validate/", {"spec": {"schema": 1}}, format="json"
        )
        assert response.status_code == 200
        assert response.json() == {"valid": False, "errors": {"chip_family": ["this field is required"]}}
        assert not CardProfile.objects.exists()

    def test_member_of_another_tenant_cannot_create_in_acme(self, member_of_other, acme, masters):
        body = {"tenant": "acme", "name": "transit", "spec": desfire_spec()}
        response = client_for(member_of_other).post("/api/v1/profiles/", body, format="json")
        assert response.status_code == 400
        assert "tenant" in response.json()

    def test_operator_cannot_create_or_deactivate(self, operator, profile):
        client = client_for(operator)
        body = {"name": "x", "spec": desfire_spec()}
        assert client.post("/api/v1/profiles/", body, format="json").status_code == 403
        assert client.post(f"/api/v1/profiles/{profile.pk}/deactivate/").status_code == 403

    def test_owner_deactivates_and_it_is_audited(self, owner, profile):
        response = client_for(owner).post(f"/api/v1/profiles/{profile.pk}/deactivate/")
        assert response.status_code == 200 and response.json()["is_active"] is False
        assert AuditEvent.objects.filter(action="profile.deactivated", actor_name="alice").exists()

    def test_anonymous_cannot_create(self, acme):
        body = {"name": "x", "spec": desfire_spec()}
        assert client_for(None).post("/api/v1/profiles/", body, format="json").status_code == 401


class TestCardsApplicationsFiles:
    def test_owner_registers_a_card_and_adds_an_application_and_a_file(self, owner, acme):
        client = client_for(owner)
        card = client.post(
            "/api/v1/cards/", {"uid": "04a1b2c3d4e5f6", "chip_type": "desfire_ev2"}, format="json"
        )
        assert card.status_code == 201 and card.json()["uid"] == "04A1B2C3D4E5F6"
        app = client.post(
            "/api/v1/applications/",
            {"card": card.json()["id"], "kind": "desfire", "aid": "F0A010", "num_keys": 2},
            format="json",
        )
        assert app.status_code == 201
        body = {
            "application": app.json()["id"],
            "file_no": 1,
            "file_type": "standard",
            "read_key": 1,
            "write_key": 1,
            "read_write_key": 0,
            "change_key": 0,
            "size": 32,
        }
        assert client.post("/api/v1/files/", body, format="json").status_code == 201
        body["file_no"], body["read_key"] = 2, 5
        refused = client.post("/api/v1/files/", body, format="json")
        assert refused.status_code == 400 and "read_key" in refused.json()

    def test_application_outside_namespace_is_a_400_naming_the_aid(self, owner, card):
        response = client_for(owner).post(
            "/api/v1/applications/", {"card": card.pk, "kind": "desfire", "aid": "F0B001"}, format="json"
        )
        assert response.status_code == 400
        assert response.json() == {"aid": ["outside the tenant's DESFire AID range F0A000-F0AFFF"]}

    def test_member_of_another_tenant_cannot_touch_acme_cards(self, member_of_other, card):
        response = client_for(member_of_other).post(
            "/api/v1/applications/", {"card": card.pk, "kind": "desfire", "aid": "F0B001"}, format="json"
        )
        assert response.status_code == 400 and response.json() == {"card": ["no such object"]}
        assert not Application.objects.exists()

    def test_anonymous_cannot_register(self, acme):
        body = {"uid": "04A1B2C3D4E5F6", "chip_type": "desfire_ev2", "tenant": "acme"}
        assert client_for(None).post("/api/v1/cards/", body, format="json").status_code == 401


class TestStations:
    def test_owner_creates_a_station_and_sees_the_token_once(self, owner, acme):
        client = client_for(owner)
        created = client.post("/api/v1/stations/", {"code": "acme-line-1"}, format="json")
        assert created.status_code == 201
        token = created.json()["enrolment_token"]
        assert token.startswith("enr_")
        again = client.get(f"/api/v1/stations/{created.json()['id']}/")
        assert "enrolment_token" not in again.json() and token not in again.content.decode()

    def test_owner_revokes_and_member_of_other_tenant_cannot(self, owner, member_of_other, acme):
        station = Station.objects.create(tenant=acme, code="acme-line-1")
        assert client_for(member_of_other).post(f"/api/v1/stations/{station.pk}/revoke/").status_code == 404
        response = client_for(owner).post(
            f"/api/v1/stations/{station.pk}/revoke/", {"reason": "moved"}, format="json"
        )
        assert response.status_code == 200 and response.json()["status"] == "revoked"

    def test_approving_a_station_that_has_not_enrolled_is_a_400(self, owner, acme):
        station = Station.objects.create(tenant=acme, code="acme-line-1")
        response = client_for(owner).post(f"/api/v1/stations/{station.pk}/approve/")
        assert response.status_code == 400 and "status" in response.json()

    def test_anonymous_cannot_create(self, acme):
        body = {"code": "x", "tenant": "acme"}
        assert client_for(None).post("/api/v1/stations/", body, format="json").status_code == 401


class TestAccess:
    def test_owner_issues_a_token_that_works_until_revoked(self, owner, acme, card):
        client = client_for(owner)
        account = client.post("/api/v1/service-accounts/", {"name": "mes"}, format="json").json()
        issued = client.post(
            "/api/v1/api-tokens/", {"account": account["id"], "label": "line 4"}, format="json"
        )
        assert issued.status_code == 201
        plain = issued.json()["token"]
        mes = client_for(None)
        mes.credentials(HTTP_AUTHORIZATION=f"Bearer {plain}")
        assert mes.get(f"/api/v1/cards/{card.pk}/").status_code == 200
        listed = client.get("/api/v1/api-tokens/").content.decode()
        assert plain not in listed and issued.json()["prefix"] in listed
        assert client.post(f"/api/v1/api-tokens/{issued.json()['id']}/revoke/").status_code == 200
        assert mes.get(f"/api/v1/cards/{card.pk}/").status_code == 401
        actions = set(AuditEvent.objects.values_list("action", flat=True))
        assert {"service_account.created", "api_token.issued", "api_token.revoked"} <= actions

    def test_member_of_another_tenant_cannot_issue_tokens_for_acme(self, member_of_other, acme):
        account = ServiceAccount.objects.create(tenant=acme, name="mes")
        response = client_for(member_of_other).post(
            "/api/v1/api-tokens/", {"account": account.pk}, format="json"
        )
        assert response.status_code == 400
        assert not ApiToken.objects.exists()

    def test_owner_grants_changes_and_removes_a_role(self, owner, acme, outsider):
        client = client_for(owner)
        granted = client.post("/api/v1/memberships/", {"username": "eve", "role": "operator"}, format="json")
        assert granted.status_code == 201
        url = f"/api/v1/memberships/{granted.json()['id']}/"
        assert client.patch(url, {"role": "auditor"}, format="json").json()["role"] == "auditor"
        assert client.delete(url).status_code == 204
        assert not Membership.objects.filter(user=outsider).exists()

    def test_member_of_another_tenant_cannot_grant_in_acme(self, member_of_other, acme, outsider):
        body = {"tenant": "acme", "username": "eve", "role": "admin"}
        assert (
            client_for(member_of_other).post("/api/v1/memberships/", body, format="json").status_code == 400
        )
        assert not Membership.objects.filter(user=outsider).exists()

    def test_mes_account_cannot_manage_access(self, mes_client):
        assert mes_client.post("/api/v1/service-accounts/", {"name": "x"}, format="json").status_code == 403

    def test_anonymous_cannot_grant(self, acme, outsider):
        body = {"tenant": "acme", "username": "eve", "role": "admin"}
        assert client_for(None).post("/api/v1/memberships/", body, format="json").status_code == 401
