"""Every endpoint, three callers: the owner (acme's admin), a member of another tenant, and nobody."""

from __future__ import annotations

import pytest

from cards.models import Application, Card, CardFile, CardProfile, Job, Order, Station
from cms.models import ApiToken, Membership, ServiceAccount
from keys.models import KeySlot, KeyVersion, MasterKeyVersion
from tests.cards.fixtures import client_for, desfire_spec


@pytest.fixture
def world(acme, owner, masters):
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
        "memberships": Membership.objects.get(user=owner).pk,
    }


ENDPOINTS = [
    "tenants",
    "profiles",
    "cards",
    "applications",
    "files",
    "stations",
    "orders",
    "jobs",
    "key-slots",
    "key-versions",
    "master-keys",
    "service-accounts",
    "api-tokens",
    "memberships",
]


def ids_in(response) -> set:
    return {str(item["id"]) for item in response.json()["results"]}


@pytest.mark.parametrize("endpoint", ENDPOINTS)
class TestEveryEndpoint:
    def test_owner_lists_and_reads_it(self, world, owner, endpoint):
        client = client_for(owner)
        listed = client.get(f"/api/v1/{endpoint}/")
        assert listed.status_code == 200
        assert str(world[endpoint]) in ids_in(listed)
        assert client.get(f"/api/v1/{endpoint}/{world[endpoint]}/").status_code == 200

    def test_member_of_another_tenant_neither_lists_nor_reads_it(self, world, member_of_other, endpoint):
        client = client_for(member_of_other)
        listed = client.get(f"/api/v1/{endpoint}/")
        assert listed.status_code == 200
        assert str(world[endpoint]) not in ids_in(listed)
        assert client.get(f"/api/v1/{endpoint}/{world[endpoint]}/").status_code == 404

    def test_outsider_without_membership_sees_nothing(self, world, outsider, endpoint):
        client = client_for(outsider)
        assert ids_in(client.get(f"/api/v1/{endpoint}/")) == set()
        assert client.get(f"/api/v1/{endpoint}/{world[endpoint]}/").status_code == 404

    def test_anonymous_caller_is_refused(self, world, endpoint):
        client = client_for(None)
        assert client.get(f"/api/v1/{endpoint}/").status_code == 401
        assert client.get(f"/api/v1/{endpoint}/{world[endpoint]}/").status_code == 401


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
