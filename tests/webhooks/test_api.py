"""/api/v1/webhooks/: tenant admins create (the secret is shown once), list, read deliveries, deactivate;
operators, another tenant's admin and anonymous callers get nothing."""
from __future__ import annotations

import pytest

from cards import webhooks
from cards.models.webhooks import WebhookEndpoint
from tests.webhooks.conftest import api_client
from tests.webhooks.test_delivery import _finish_order, world  # noqa: F401 - world is a fixture

pytestmark = pytest.mark.django_db
BODY = {"url": "https://mes.example/cms-events", "events": ["order.completed", "card.state_changed"]}


def test_owner_creates_a_webhook_and_sees_the_secret_only_in_the_answer(acme, admin):
    client = api_client(admin)
    created = client.post("/api/v1/webhooks/", BODY, format="json")
    assert created.status_code == 201, created.content
    secret = created.json()["secret"]
    assert len(bytes.fromhex(secret)) == 32 and created.json()["tenant"] == "acme"
    listed = client.get("/api/v1/webhooks/")
    assert [w["id"] for w in listed.json()["results"]] == [created.json()["id"]]
    assert secret not in listed.content.decode() and "secret" not in listed.json()["results"][0]
    detail = client.get(f"/api/v1/webhooks/{created.json()['id']}/").content.decode()
    assert secret not in detail and "secret_ref" not in detail


def test_bad_input_is_a_400_naming_the_field(acme, admin):
    client = api_client(admin)
    for body, field in [({**BODY, "url": "not a url"}, "url"),
                        ({**BODY, "events": ["order.shipped"]}, "events"), ({**BODY, "events": []}, "events"),
                        ({"events": ["order.completed"]}, "url"),
                        ({**BODY, "url": "https://user:pw@mes.example/x"}, "url")]:
        response = client.post("/api/v1/webhooks/", body, format="json")
        assert response.status_code == 400 and field in response.json(), (body, response.content)
    assert not WebhookEndpoint.objects.exists()


def test_deliveries_are_listed_with_their_attempts(acme, admin, world, receiver):  # noqa: F811
    client = api_client(admin)
    hook = client.post("/api/v1/webhooks/", {**BODY, "url": receiver.url}, format="json").json()
    _finish_order(world)
    webhooks.webhooks_collect()
    receiver.statuses = [503]
    delivery_id = WebhookEndpoint.objects.get().deliveries.get().pk
    webhooks.webhook_attempt(delivery_id=str(delivery_id))
    page = client.get(f"/api/v1/webhooks/{hook['id']}/deliveries/").json()
    assert page["count"] == 1
    row = page["results"][0]
    assert (row["event"], row["state"], row["attempts"], row["last_status"]) == ("order.completed", "pending",
                                                                               1, 503)
    deactivated = client.post(f"/api/v1/webhooks/{hook['id']}/deactivate/", format="json")
    assert deactivated.status_code == 200 and deactivated.json()["is_active"] is False


def test_operator_other_tenant_and_anonymous_reach_nothing(acme, admin, operator, other_admin):
    endpoint, _ = webhooks.webhook_endpoint_create(actor=admin, tenant=acme, url=BODY["url"],
                                                   events=BODY["events"])
    for user in (operator, other_admin):
        client = api_client(user)
        assert client.get("/api/v1/webhooks/").json()["results"] == []
        assert client.get(f"/api/v1/webhooks/{endpoint.pk}/").status_code == 404
        assert client.get(f"/api/v1/webhooks/{endpoint.pk}/deliveries/").status_code == 404
        assert client.post(f"/api/v1/webhooks/{endpoint.pk}/deactivate/").status_code == 404
    # the operator names acme (their tenant) but may not manage it; the other admin cannot name it
    assert api_client(operator).post("/api/v1/webhooks/", {**BODY, "tenant": "acme"},
                                     format="json").status_code in (400, 403)
    assert api_client(other_admin).post("/api/v1/webhooks/", {**BODY, "tenant": "acme"},
                                        format="json").status_code == 400
    anonymous = api_client()
    assert anonymous.get("/api/v1/webhooks/").status_code == 401
    assert anonymous.post("/api/v1/webhooks/", BODY, format="json").status_code == 401
    endpoint.refresh_from_db()
    assert endpoint.is_active and WebhookEndpoint.objects.filter(tenant=acme).count() == 1
