"""POST /api/v1/stations/enroll/ (jobproto.md) and the CMS job-signing key in Vault Transit."""
from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from django.core.cache import cache
from django.utils import timezone
from rest_framework.test import APIClient

from audit.models import AuditEvent
from cards.models import Station
from cards.services.stations import station_create
from keys import signing
from keys.errors import KeystoreUnavailable
from readeragent import protocol

from .conftest import StationDouble

pytestmark = [pytest.mark.vault, pytest.mark.django_db]
URL = "/api/v1/stations/enroll/"


@pytest.fixture(autouse=True)
def fresh_throttle():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def pending(acme):
    from django.contrib.auth import get_user_model

    from cms.models import Membership

    admin = get_user_model().objects.create_user(username="ada", password=None)
    Membership.objects.create(user=admin, tenant=acme, role="admin")
    station, token = station_create(actor=admin, tenant=acme, code="line7", line="line-7")
    return station, token


def _body(token: str, double: StationDouble, code: str = "line7") -> dict:
    return {"code": code, "token": token, "hpke_public_key": double.hpke_public_hex,
            "sign_public_key": double.sign_public_hex}


def test_station_enrols_with_its_token_and_learns_the_cms_signing_key(pending):
    station, token = pending
    double = StationDouble(code="line7")
    response = APIClient().post(URL, _body(token, double), format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    raw, version = signing.public_key()
    assert body == {"station": "line7", "status": "enrolled", "queue": "station.line7",
                    "cms_signing_public_key": raw.hex(), "cms_signing_key_version": version}
    station.refresh_from_db()
    assert (station.status, station.hpke_public_key, station.sign_public_key) == \
        ("enrolled", double.hpke_public_hex, double.sign_public_hex)
    assert AuditEvent.objects.get(action="station.enrolled").details["station"] == "line7"
    # what the station will verify jobs with: a document signed by Transit checks out
    signed = signing.sign_document({"v": 1, "hello": "station"})
    protocol.verify_signature(signed, Ed25519PublicKey.from_public_bytes(bytes.fromhex(
        body["cms_signing_public_key"])), "job")


def test_used_wrong_and_expired_tokens_get_a_clear_403_and_an_audit_event(pending):
    station, token = pending
    client = APIClient()
    double = StationDouble(code="line7")
    wrong = client.post(URL, _body("enr_not-the-token", double), format="json")
    assert wrong.status_code == 403 and "not valid" in wrong.json()["token"][0]
    unknown = client.post(URL, _body(token, double, code="nope"), format="json")
    assert unknown.status_code == 403 and unknown.json() == wrong.json()
    Station.objects.filter(pk=station.pk).update(enrolment_expires_at=timezone.now() - timedelta(minutes=1))
    expired = client.post(URL, _body(token, double), format="json")
    assert expired.status_code == 403 and "expired" in expired.json()["token"][0]
    Station.objects.filter(pk=station.pk).update(enrolment_expires_at=timezone.now() + timedelta(hours=1))
    assert client.post(URL, _body(token, double), format="json").status_code == 200
    used = client.post(URL, _body(token, StationDouble(code="line7")), format="json")
    assert used.status_code == 403 and "already used" in used.json()["token"][0]
    station.refresh_from_db()
    assert station.sign_public_key == double.sign_public_hex  # the second enrolment changed nothing
    reasons = [e.details["reason"] for e in AuditEvent.objects.filter(action="station.enrolment_refused")
               .order_by("sequence")]
    assert reasons == ["invalid", "invalid", "expired", "used"]


def test_bad_public_keys_are_400_naming_the_field(pending):
    _, token = pending
    body = _body(token, StationDouble(code="line7"))
    response = APIClient().post(URL, {**body, "hpke_public_key": "zz" * 32}, format="json")
    assert response.status_code == 400 and "hpke_public_key" in response.json()
    response = APIClient().post(URL, {**body, "sign_public_key": "00" * 31}, format="json")
    assert response.status_code == 400 and "sign_public_key" in response.json()
    assert Station.objects.get(code="line7").status == "pending"


def test_sealed_vault_fails_closed_with_503_and_keeps_the_token_usable(pending, vault):
    station, token = pending
    double = StationDouble(code="line7")
    signing.ensure_signing_key()  # the audit chain key and signing key exist; then Vault is sealed
    vault.seal()
    try:
        response = APIClient().post(URL, _body(token, double), format="json")
        assert response.status_code == 503
        with pytest.raises(KeystoreUnavailable):
            signing.sign_document({"v": 1})
    finally:
        vault.unseal()
    from cms import vault as cms_vault

    cms_vault.reset_client()
    station.refresh_from_db()
    assert station.status == "pending"
    assert APIClient().post(URL, _body(token, double), format="json").status_code == 200


def test_enrolment_is_throttled(pending):
    _, token = pending
    client = APIClient()
    codes = [client.post(URL, _body("enr_wrong", StationDouble(code="x")), format="json").status_code
             for _ in range(61)]
    assert codes[-1] == 429 and set(codes[:60]) == {403}


def test_signature_names_the_transit_key_version_and_survives_rotation(vault):
    first = signing.sign_document({"v": 1, "n": 1})
    assert first["signing_key_version"] == 1
    vault.root_client().secrets.transit.rotate_key(name=signing.signing_key_name())
    signing.forget_public_keys()
    second = signing.sign_document({"v": 1, "n": 2})
    assert second["signing_key_version"] == 2
    signing.verify_document(first)
    signing.verify_document(second)
    with pytest.raises(protocol.ProtocolError):
        signing.verify_document({**second, "signing_key_version": 1})
