"""Every route and operation, three callers: the owner (acme's admin), a member of another tenant, nobody.

The routes come from the API router and the operations from the OpenAPI schema, so a new
endpoint cannot be forgotten: it fails here until it has an object in `world` and an owner
request in OWNER_REQUESTS.
"""

from __future__ import annotations

import hashlib

import pytest
from drf_spectacular.generators import SchemaGenerator

from audit.models import Alert
from audit.services import record_event
from cards.models import Application, Card, CardFile, CardProfile, Job, Order, Station, Tenant
from cards.models.webhooks import WebhookEndpoint
from cards.webhooks import secret_ref as webhook_secret_ref
from cms.api_urls import router
from cms.models import ApiToken, Membership, ServiceAccount
from keys.models import KeySlot, KeyVersion, MasterKey, MasterKeyVersion
from tests.cards.fixtures import client_for, desfire_spec

API = "/api/v1/"
# Operations that take no user: their own credential is in the request (anonymous gets their refusal).
PUBLIC_OPERATIONS = {("POST", f"{API}stations/enroll/")}
ROUTES = [prefix for prefix, _viewset, _basename in router.registry]
OPERATIONS = sorted(
    (method.upper(), path)
    for path, methods in SchemaGenerator().get_schema(public=True)["paths"].items()
    if path.startswith(API)
    for method in methods
)


@pytest.fixture
def world(acme, owner, operator, outsider, masters):
    """One object of every kind in acme (made directly: these tests are about who sees them)."""
    profile = CardProfile.objects.create(
        tenant=acme, name="transit", chip_family="desfire", spec=desfire_spec()
    )
    card = Card.objects.create(tenant=acme, uid="04112233445566", chip_type="desfire_ev3", profile=profile)
    app = Application.objects.create(card=card, tenant=acme, kind="desfire", aid="F0A001", num_keys=2)
    card_file = CardFile.objects.create(
        application=app,
        file_no=1,
        file_type="standard",
        read_key=1,
        write_key=1,
        read_write_key=0,
        change_key=0,
        size=32,
    )
    station = Station.objects.create(tenant=acme, code="acme-line-1")
    order = Order.objects.create(
        tenant=acme, profile=profile, quantity=1, idempotency_key="k1", request_fingerprint="0" * 64
    )
    job = Job.objects.create(tenant=acme, order=order, card=card, station=station)
    master = masters["amk-master"]
    MasterKeyVersion.objects.create(master=master, number=1, kcv="A1B2C3", vault_ref="cms/t/secret-ref")
    slot = KeySlot.objects.create(tenant=acme, card=card, application=app, role="amk", key_no=0)
    version = KeyVersion.objects.create(
        slot=slot, number=1, policy="random", kcv="D4E5F6", vault_ref="cms/t/secret-ref"
    )
    account = ServiceAccount.objects.create(tenant=acme, name="mes")
    token, _ = ApiToken.objects.issue(account)
    event = record_event(action="test.world_made", actor_type="system", actor_name="tests", tenant=acme)
    alert = Alert.objects.create(tenant_id=acme.pk, tenant_slug=acme.slug, rule="station_silent",
                                 subject="station:acme-line-1", message="silent",
                                 first_seen_at=event.created_at, last_seen_at=event.created_at)
    webhook = WebhookEndpoint.objects.create(tenant=acme, url="https://mes.example/hook",
                                             events=["job.finished"])
    webhook.secret_ref = str(webhook_secret_ref(webhook))  # no blob behind it: these tests are about access
    webhook.save()
    return {
        "tenants": acme.pk,
        "profiles": profile.pk,
        "cards": card.pk,
        "applications": app.pk,
        "files": card_file.pk,
        "stations": station.pk,
        "orders": order.pk,
        "jobs": str(job.pk),
        "key-slots": slot.pk,
        "key-versions": version.pk,
        "master-keys": master.pk,
        "service-accounts": account.pk,
        "api-tokens": token.pk,
        "memberships": Membership.objects.get(user=operator).pk,
        "audit-events": event.pk,
        "alerts": alert.pk,
        "webhooks": webhook.pk,
    }


# What the owner sends for each operation and the status it gets. Reads are 200; tenants are
# created and edited by superusers only; approving a station that never enrolled is refused.
def _owner_request(method: str, path: str, world: dict) -> tuple[dict | None, dict, int]:
    """(body, headers, expected status) of the owner's request for one operation."""
    if method == "GET":
        return None, {}, 200
    file_body = {"application": world["applications"], "file_no": 2, "file_type": "standard", "read_key": 1,
                 "write_key": 1, "read_write_key": 0, "change_key": 0, "size": 32}
    requests = {
        ("POST", "tenants/"): ({"slug": "initech", "name": "Initech", "gp_aid_prefix": "A00000061700D00D0001",
                               "desfire_aid_first": 0xF0C000, "desfire_aid_last": 0xF0CFFF}, {}, 403),
        ("PATCH", "tenants/{id}/"): ({"name": "Acme Corp"}, {}, 403),
        ("POST", "profiles/"): ({"name": "transit-2", "spec": desfire_spec()}, {}, 201),
        ("POST", "profiles/validate/"): ({"spec": desfire_spec()}, {}, 200),
        ("POST", "profiles/{id}/deactivate/"): (None, {}, 200),
        ("POST", "cards/"): ({"uid": "04A1B2C3D4E5F6", "chip_type": "desfire_ev2"}, {}, 201),
        ("POST", "applications/"): ({"card": world["cards"], "kind": "desfire", "aid": "F0A010",
                                     "num_keys": 2}, {}, 201),
        ("POST", "files/"): (file_body, {}, 201),
        ("POST", "stations/"): ({"code": "acme-line-2"}, {}, 201),
        ("POST", "stations/{id}/approve/"): (None, {}, 400),
        ("POST", "stations/{id}/enrolment-token/"): (None, {}, 200),
        ("POST", "stations/{id}/revoke/"): ({"reason": "moved"}, {}, 200),
        # one CMS job-signing key for every tenant: superusers only (tests/pipeline/test_signing_key_roll)
        ("POST", "stations/signing-key-rotate/"): ({"reason": "yearly"}, {}, 403),
        ("POST", "stations/signing-key-roll/"): ({}, {}, 403),
        ("POST", "orders/"): ({"profile": world["profiles"], "quantity": 5},
                              {"HTTP_IDEMPOTENCY_KEY": "order-7"}, 201),
        ("POST", "memberships/"): ({"username": "eve", "role": "operator"}, {}, 201),
        ("PATCH", "memberships/{id}/"): ({"role": "auditor"}, {}, 200),
        ("DELETE", "memberships/{id}/"): (None, {}, 204),
        ("POST", "service-accounts/"): ({"name": "mes-2"}, {}, 201),
        ("POST", "service-accounts/{id}/deactivate/"): (None, {}, 200),
        ("POST", "api-tokens/"): ({"account": world["service-accounts"], "label": "line 4"}, {}, 201),
        ("POST", "api-tokens/{id}/revoke/"): (None, {}, 200),
        ("POST", "cards/{id}/release/"): ({"reason": "checked by hand"}, {}, 400),  # it is not quarantined
        ("POST", "profiles/{id}/plan/"): ({"card": world["cards"]}, {}, 200),
        ("POST", "alerts/{id}/acknowledge/"): ({"note": "looking"}, {}, 200),
        # the receiver is created (its secret wrapped in Vault) and deactivated (the secret destroyed)
        ("POST", "webhooks/"): ({"url": "https://mes.example/cms", "events": ["order.completed"]}, {}, 201),
        ("POST", "webhooks/{id}/deactivate/"): (None, {}, 200),
        # no user at all: the one-time enrolment token is the credential, and this one is wrong
        ("POST", "stations/enroll/"): ({"code": "acme-line-1", "token": "enr_not-the-token",
                                       "hpke_public_key": "11" * 32, "sign_public_key": "22" * 32}, {}, 403),
    }
    key = (method, path.removeprefix(API))
    if key not in requests:
        pytest.fail(f"{method} {path} is new: add the owner's request and expected status to _owner_request")
    return requests[key]


def _route(path: str) -> str:
    return path.removeprefix(API).split("/", 1)[0]


def _concrete(path: str, world: dict) -> str:
    return path.replace("{id}", str(world[_route(path)]))


def _call(client, method: str, path: str, body: dict | None, headers: dict):
    return getattr(client, method.lower())(path, body, format="json", **headers)


def _acme_state(acme: Tenant) -> str:
    """A digest of every row that belongs to acme (audit events aside: refusals may be recorded)."""
    models = [Tenant, CardProfile, Card, Application, CardFile, Station, Order, Job, KeySlot, KeyVersion,
              MasterKey, ServiceAccount, ApiToken, Membership, WebhookEndpoint, Alert]
    rows = []
    for model in models:
        path = "id" if model.tenant_path == "id" else f"{model.tenant_path}"
        rows.append(repr(list(model.objects.filter(**{path: acme.pk}).order_by("pk").values())))
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()


def test_every_registered_route_is_covered(world):
    assert set(ROUTES) == set(world), "a new route needs an object in world()"
    assert {_route(path) for _method, path in OPERATIONS} == set(ROUTES)


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
class TestEveryOperation:
    def test_owner_gets_what_the_role_allows(self, world, owner, method, path):
        body, headers, expected = _owner_request(method, path, world)
        response = _call(client_for(owner), method, _concrete(path, world), body, headers)
        assert response.status_code == expected, response.content[:500]
        if method == "GET" and "{id}" not in path:
            assert str(world[_route(path)]) in ids_in(response)

    def test_member_of_another_tenant_reaches_nothing_of_acme(self, world, acme, member_of_other, method,
                                                              path):
        body, headers, _ = _owner_request(method, path, world)
        before = _acme_state(acme)
        response = _call(client_for(member_of_other), method, _concrete(path, world), body, headers)
        if "{id}" in path:
            assert response.status_code == 404, response.content[:500]
        elif method == "GET":
            assert response.status_code == 200
            assert str(world[_route(path)]) not in ids_in(response)
        elif path == f"{API}profiles/validate/":
            # a dry run against the caller's own tenant: acme's master key names mean nothing there
            assert response.status_code == 200 and response.json()["valid"] is False
        else:
            # a create that names acme's objects (or lands in the caller's own tenant) never touches acme
            assert response.status_code in (201, 400, 403), response.content[:500]
        assert _acme_state(acme) == before

    def test_anonymous_caller_is_refused(self, world, acme, method, path):
        body, headers, _ = _owner_request(method, path, world)
        before = _acme_state(acme)
        expected = 401
        if (method, path) in PUBLIC_OPERATIONS:
            expected = _owner_request(method, path, world)[2]
        response = _call(client_for(None), method, _concrete(path, world), body, headers)
        assert response.status_code == expected, response.content[:500]
        assert _acme_state(acme) == before


@pytest.mark.parametrize("endpoint", ROUTES)
def test_outsider_without_membership_sees_nothing(world, outsider, endpoint):
    client = client_for(outsider)
    assert ids_in(client.get(f"{API}{endpoint}/")) == set()
    assert client.get(f"{API}{endpoint}/{world[endpoint]}/").status_code == 404


def ids_in(response) -> set:
    return {str(item["id"]) for item in response.json()["results"]}


def test_superuser_sees_every_tenant(world, superuser, globex):
    assert {t["slug"] for t in client_for(superuser).get("/api/v1/tenants/").json()["results"]} == {
        "acme",
        "globex",
    }


def test_key_metadata_never_carries_a_vault_reference(world, owner):
    client = client_for(owner)
    for endpoint in ("key-slots", "key-versions", "master-keys"):
        body = client.get(f"/api/v1/{endpoint}/{world[endpoint]}/").content.decode()
        assert "vault_ref" not in body and "secret-ref" not in body
    slot = client.get(f"/api/v1/key-slots/{world['key-slots']}/").json()
    assert slot["versions"][0]["kcv"] == "D4E5F6" and slot["versions"][0]["state"] == "pending"


def test_token_list_shows_the_prefix_and_never_the_digest(world, owner):
    token = ApiToken.objects.get(pk=world["api-tokens"])
    body = client_for(owner).get("/api/v1/api-tokens/").content.decode()
    assert token.prefix in body and token.digest not in body and "digest" not in body


def test_auditor_reads_but_does_not_see_access_records(world, auditor):
    client = client_for(auditor)
    assert client.get(f"/api/v1/cards/{world['cards']}/").status_code == 200
    assert client.get(f"/api/v1/memberships/{world['memberships']}/").status_code == 404


def test_mes_token_reads_its_tenant_only(world, mes_client, globex):
    assert mes_client.get(f"/api/v1/cards/{world['cards']}/").status_code == 200
    assert mes_client.get(f"/api/v1/service-accounts/{world['service-accounts']}/").status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/cards/99999999999999999999999/",
        "/api/v1/cards/abc/",
        "/api/v1/jobs/not-a-uuid/",
        "/api/v1/cards/?offset=99999999999999999999999",
    ],
)
def test_impossible_ids_and_offsets_are_not_server_errors(world, owner, path):
    assert client_for(owner).get(path).status_code in (200, 404)
