"""Rotating the CMS job-signing key (OpenBao Transit) without re-enrolling stations: the CMS side
(cards/services/keyroll.py, the API actions, the `cms.key_roll_result` task) with the station played by
the agent's real code (readeragent.identity.enroll, readeragent.keyroll, readeragent.executor on a
cardsim DESFire card)."""
from __future__ import annotations

import secrets
import uuid

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from audit.models import AuditEvent
from cards.models import Card, Order, Station, StationKeyRoll
from cards.services import keyroll as cms_keyroll
from cards.services.stations import station_approve, station_create, station_revoke
from cardsim.desfire import DESFireCard
from keys import signing
from keys.tasks import key_roll_result
from readeragent import executor, keyroll, protocol
from readeragent import identity as agent_identity
from readeragent.identity import Identity
from readeragent.ledger import ReplayLedger
from readeragent.monitor import make_report

from .conftest import DESFIRE_SPEC, DESFIRE_UID

pytestmark = [pytest.mark.vault, pytest.mark.django_db]
ROTATE = "/api/v1/stations/signing-key-rotate/"
ROLL = "/api/v1/stations/signing-key-roll/"


class Transport:
    def __init__(self, card) -> None:
        self.card = card

    def transmit(self, apdu: bytes) -> bytes:
        return self.card.transmit(apdu)


@pytest.fixture
def rolls(monkeypatch):
    """Key-roll messages the CMS dispatches (queue, document), captured instead of the broker."""
    out: list[tuple[str, dict]] = []
    monkeypatch.setattr(cms_keyroll, "dispatch", lambda queue, document: out.append((queue, document)))
    return out


@pytest.fixture
def superuser(db):
    return get_user_model().objects.create_superuser(username=f"root-{secrets.token_hex(3)}", password=None)


@pytest.fixture
def enrolled(acme, tmp_path, monkeypatch, superuser):
    """A station enrolled by the agent's own `enroll` (its HTTP post answered by the CMS's API in-process),
    approved: it pinned the job-signing key version of the day, 1."""
    from cms.models import Membership

    admin = get_user_model().objects.create_user(username=f"ada-{secrets.token_hex(3)}", password=None)
    Membership.objects.create(user=admin, tenant=acme, role="admin")
    code = f"line8-{secrets.token_hex(3)}"
    model, token = station_create(actor=admin, tenant=acme, code=code, line="line-8")

    def post(url, body, timeout):
        response = APIClient().post(url.removeprefix("http://cms.test"), body, format="json")
        return response.status_code, response.json()

    monkeypatch.setattr(agent_identity, "_post_json", post)
    home = tmp_path / f"agent-{code}"
    ident = agent_identity.enroll(cms_url="http://cms.test", station=code, token=token, home=home)
    assert sorted(ident.cms_signing_keys) == [1]
    station_approve(actor=admin, station=model)
    ledger = ReplayLedger.in_home(home)
    yield ident, home, Station.objects.get(pk=model.pk), ledger, admin
    ledger.close()


def _rotate(client, captured) -> dict:
    with captured(execute=True):
        response = client.post(ROTATE, {"reason": "yearly rotation"}, format="json")
    assert response.status_code == 200, response.content
    return response.json()


@pytest.fixture
def ev2_profile(acme, masters):
    """seed 003's DESFire profile for an EV2 card as it leaves the factory (AES transport key)."""
    from cards.models import CardProfile

    spec = {**DESFIRE_SPEC, "picc": {**DESFIRE_SPEC["picc"],
                                     "transport_key": {"master": None, "key_type": "aes128"}}}
    return CardProfile.objects.create(tenant=acme, name="campus-ev2", chip_family="desfire", spec=spec)


def _present_and_run(cms, ident, home, ledger, profile, card) -> tuple[dict, dict]:
    Order.objects.create(tenant=profile.tenant, profile=profile, quantity=1,
                         station=Station.objects.get(code=ident.station),
                         idempotency_key=secrets.token_hex(6), request_fingerprint="0" * 64)
    cms.report(make_report(ident, "card_presented", "Virtual PCD 00 00", uid=DESFIRE_UID, atr="3B8180018080",
                           chip_type="desfire_ev2"))
    envelope = cms.last_envelope()
    result = executor.execute(envelope, Transport(card), identity=Identity.load(home), ledger=ledger,
                              card_uid=DESFIRE_UID)
    return envelope, result


def test_a_job_signed_with_the_new_version_runs_on_a_station_enrolled_before_the_rotation(
        enrolled, superuser, rolls, cms, ev2_profile, django_capture_on_commit_callbacks, vault):
    ident, home, station, ledger, _ = enrolled
    assert station.cms_signing_key_version == 1
    client = APIClient()
    client.force_authenticate(superuser)
    out = _rotate(client, django_capture_on_commit_callbacks)
    assert (out["previous_version"], out["new_version"], out["sent"]) == (1, 2, [station.code])
    # the rotation is real: Transit has version 2
    assert vault.root_client().secrets.transit.read_key(name=signing.signing_key_name())["data"][
        "latest_version"] == 2

    queue, document = rolls[-1]
    assert queue == station.queue and document["signing_key_version"] == 1 and document["new_version"] == 2
    answer = keyroll.apply_key_roll(document, ident, home)  # the agent's task body
    assert answer["state"] == "pinned"
    assert key_roll_result.run(answer) == {"status": "pinned", "station": station.code, "version": 2}
    station.refresh_from_db()
    assert station.cms_signing_key_version == 2
    assert StationKeyRoll.objects.get(pk=document["roll_id"]).state == "pinned"

    envelope, result = _present_and_run(cms, ident, home, ledger, ev2_profile,
                                        DESFireCard("ev2", uid=bytes.fromhex(DESFIRE_UID)))
    assert envelope["signing_key_version"] == 2  # signed by Transit's new version, no re-enrolment
    assert result["state"] == "succeeded", result["error"]
    assert cms.result(result)["state"] == "succeeded"
    assert Card.objects.get(uid=DESFIRE_UID).state == "active"
    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {"keys.job_signing_key_rotated", "station.key_roll_sent", "station.signing_key_pinned"} <= actions


def test_until_the_station_answers_its_jobs_stay_signed_with_the_version_it_trusts(
        enrolled, superuser, rolls, cms, ev2_profile, django_capture_on_commit_callbacks):
    ident, home, station, ledger, _ = enrolled
    client = APIClient()
    client.force_authenticate(superuser)
    _rotate(client, django_capture_on_commit_callbacks)
    envelope, result = _present_and_run(cms, ident, home, ledger, ev2_profile,
                                        DESFireCard("ev2", uid=bytes.fromhex(DESFIRE_UID)))
    assert envelope["signing_key_version"] == 1 and result["state"] == "succeeded", result["error"]
    # the roll was lost: sending again makes a new roll, which the station pins
    with django_capture_on_commit_callbacks(execute=True):
        again = client.post(ROLL, {}, format="json")
    assert again.status_code == 200 and again.json()["sent"] == [station.code]
    answer = keyroll.apply_key_roll(rolls[-1][1], ident, home)
    assert key_roll_result.run(answer)["status"] == "pinned"
    # retiring version 1: told only to stations whose jobs are already signed with 2
    with django_capture_on_commit_callbacks(execute=True):
        retire = client.post(ROLL, {"retire_below": 2}, format="json")
    assert retire.status_code == 200 and retire.json()["sent"] == [station.code]
    document = rolls[-1][1]
    assert document["signing_key_version"] == 2 and document["retire_below"] == 2
    assert key_roll_result.run(keyroll.apply_key_roll(document, ident, home))["status"] == "pinned"
    assert sorted(Identity.load(home).cms_signing_keys) == [2]
    bad = client.post(ROLL, {"retire_below": 0}, format="json")
    assert bad.status_code == 400 and "retire_below" in bad.json()


def test_only_superusers_rotate_and_revoked_or_unapproved_stations_get_nothing(
        enrolled, superuser, rolls, acme, station, django_capture_on_commit_callbacks):
    ident, home, model, ledger, admin = enrolled
    tenant_admin = APIClient()
    tenant_admin.force_authenticate(admin)
    assert tenant_admin.post(ROTATE, format="json").status_code == 403
    assert tenant_admin.post(ROLL, {}, format="json").status_code == 403
    assert int(signing.ensure_signing_key()["latest_version"]) == 1

    pending, _ = station_create(actor=admin, tenant=acme, code=f"line9-{secrets.token_hex(3)}")
    station_revoke(actor=admin, station=model, reason="stolen")
    client = APIClient()
    client.force_authenticate(superuser)
    out = _rotate(client, django_capture_on_commit_callbacks)
    # the fixture's approved station was made without enrolment: its version (never recorded) is the one
    # its jobs were signed with so far
    assert out["sent"] == [station.code] and [q for q, _ in rolls] == [station.model.queue]
    assert rolls[-1][1]["signing_key_version"] == 1
    assert not StationKeyRoll.objects.filter(station__in=[model, pending]).exists()


def test_forged_replayed_unknown_and_revoked_answers_are_refused_and_audited(
        enrolled, superuser, rolls, django_capture_on_commit_callbacks):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    ident, home, station, ledger, admin = enrolled
    client = APIClient()
    client.force_authenticate(superuser)
    _rotate(client, django_capture_on_commit_callbacks)
    document = rolls[-1][1]
    answer = keyroll.apply_key_roll(document, ident, home)

    forged = protocol.sign_with(answer, Ed25519PrivateKey.generate())
    assert key_roll_result.run(forged) == {"status": "refused", "reason": "signature"}
    unknown = protocol.sign_with({**answer, "roll_id": str(uuid.uuid4())}, ident.sign_private_key)
    assert key_roll_result.run(unknown) == {"status": "refused", "reason": "unknown"}
    tampered = {**answer, "new_version": 3}
    assert key_roll_result.run(tampered)["reason"] == "signature"
    station.refresh_from_db()
    assert station.cms_signing_key_version == 1  # nothing moved

    assert key_roll_result.run(answer)["status"] == "pinned"
    assert key_roll_result.run(answer) == {"status": "refused", "reason": "replay"}
    reasons = list(AuditEvent.objects.filter(action="station.key_roll_answer_refused")
                   .order_by("sequence").values_list("details__reason", flat=True))
    assert reasons == ["signature", "unknown", "signature", "replay"]

    station_revoke(actor=admin, station=station)
    late = protocol.sign_with({**answer, "roll_id": str(uuid.uuid4())}, ident.sign_private_key)
    assert key_roll_result.run(late) == {"status": "refused", "reason": "station"}


def test_a_roll_the_station_refuses_is_recorded_and_moves_nothing(enrolled, superuser, rolls,
                                                                  django_capture_on_commit_callbacks):
    ident, home, station, ledger, _ = enrolled
    client = APIClient()
    client.force_authenticate(superuser)
    _rotate(client, django_capture_on_commit_callbacks)
    document = rolls[-1][1]
    tampered = {**document, "new_version": 5}  # e.g. altered on the way: the station's check fails
    answer = keyroll.apply_key_roll(tampered, ident, home)
    assert (answer["state"], answer["reason"]) == ("refused", "signature")
    # the answer names the version it was sent (5), not the roll's: refused at the CMS as malformed
    assert key_roll_result.run(answer) == {"status": "refused", "reason": "malformed"}
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    forged = protocol.sign_with(document, Ed25519PrivateKey.generate())  # same roll id, another signer
    honest = keyroll.apply_key_roll(forged, ident, home)
    assert key_roll_result.run(honest)["status"] == "refused"
    roll = StationKeyRoll.objects.get(pk=document["roll_id"])
    assert roll.state == "refused" and roll.reason.startswith("signature")
    station.refresh_from_db()
    assert station.cms_signing_key_version == 1 and sorted(Identity.load(home).cms_signing_keys) == [1]
    event = AuditEvent.objects.get(action="station.key_roll_refused")
    assert event.result == "failure" and event.details["reason"] == "signature"
