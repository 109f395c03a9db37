"""Orders: Idempotency-Key semantics (same body 200, other body 409, missing 400) and tenant scoping."""

from __future__ import annotations

import pytest

from cards.models import CardProfile, Order, Station
from tests.cards.fixtures import client_for, desfire_spec


@pytest.fixture
def profile(acme, masters):
    return CardProfile.objects.create(tenant=acme, name="transit", chip_family="desfire", spec=desfire_spec())


def post(client, body, key="order-0001"):
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key is not None else {}
    return client.post("/api/v1/orders/", body, format="json", **headers)


def test_mes_posts_an_order_and_the_same_key_and_body_returns_it(mes_client, profile):
    body = {"profile": profile.pk, "quantity": 100, "line": "4"}
    first = post(mes_client, body)
    assert first.status_code == 201
    again = post(
        mes_client, dict(reversed(list(body.items())))
    )  # key order is not part of the body's meaning
    assert again.status_code == 200
    assert again.json() == first.json()
    assert Order.objects.count() == 1


def test_same_key_with_another_body_is_a_conflict(mes_client, profile):
    assert post(mes_client, {"profile": profile.pk, "quantity": 100}).status_code == 201
    response = post(mes_client, {"profile": profile.pk, "quantity": 101})
    assert response.status_code == 409
    assert Order.objects.get().quantity == 100


def test_missing_key_is_a_400(mes_client, profile):
    response = post(mes_client, {"profile": profile.pk, "quantity": 1}, key=None)
    assert response.status_code == 400 and "Idempotency-Key" in response.json()
    assert not Order.objects.exists()


def test_replay_is_answered_even_after_the_profile_was_deactivated(mes_client, profile):
    assert post(mes_client, {"profile": profile.pk, "quantity": 5}).status_code == 201
    CardProfile.objects.filter(pk=profile.pk).update(is_active=False)
    assert post(mes_client, {"profile": profile.pk, "quantity": 5}).status_code == 200
    assert post(mes_client, {"profile": profile.pk, "quantity": 5}, key="order-0002").status_code == 400


def test_uids_are_normalised_and_checked(mes_client, profile):
    ok = post(mes_client, {"profile": profile.pk, "uids": ["04112233445566", "04aabbccddeeff"]})
    assert ok.status_code == 201 and ok.json()["uids"] == ["04112233445566", "04AABBCCDDEEFF"]
    bad = post(mes_client, {"profile": profile.pk, "uids": ["0411", "0411"]}, key="order-0002")
    assert bad.status_code == 400 and "uids" in bad.json()


def test_quantity_or_uids_but_not_neither(mes_client, profile):
    response = post(mes_client, {"profile": profile.pk})
    assert response.status_code == 400 and "quantity" in response.json()


def test_the_same_key_in_two_tenants_makes_two_orders(mes_client, profile, member_of_other, globex):
    other_profile = CardProfile.objects.create(tenant=globex, name="t", chip_family="desfire", spec={})
    assert post(mes_client, {"profile": profile.pk, "quantity": 1}).status_code == 201
    assert post(client_for(member_of_other), {"profile": other_profile.pk, "quantity": 1}).status_code == 201


def test_member_of_another_tenant_cannot_order_with_acme_profile(member_of_other, profile, globex):
    response = post(client_for(member_of_other), {"profile": profile.pk, "quantity": 1})
    assert response.status_code == 400 and response.json() == {"profile": ["no such object"]}


def test_revoked_station_takes_no_orders(owner, profile, acme):
    station = Station.objects.create(tenant=acme, code="s1", status="revoked")
    response = post(client_for(owner), {"profile": profile.pk, "quantity": 1, "station": station.pk})
    assert response.status_code == 400 and response.json() == {"station": ["is revoked"]}


def test_auditor_cannot_order(auditor, profile):
    assert post(client_for(auditor), {"profile": profile.pk, "quantity": 1}).status_code == 403


def test_anonymous_cannot_order(profile):
    assert post(client_for(None), {"profile": profile.pk, "quantity": 1}).status_code == 401
