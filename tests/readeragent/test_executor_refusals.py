"""Every job the station must refuse is refused before the card hears a single APDU, with a signed reason."""
from __future__ import annotations

import base64
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from readeragent import protocol
from readeragent.executor import execute

from . import flows
from .conftest import VirtualTransport


def _execute(envelope, identity, ledger, card, *, card_uid=flows.DESFIRE_UID, now=None):
    return execute(envelope, VirtualTransport(card), identity=identity, ledger=ledger, card_uid=card_uid,
                   now=now)


def _assert_refused(result, identity, card, reason):
    assert result["state"] == "refused", result
    assert result["error"]["reason"] == reason
    assert result["steps"] == [] and result["trace"] == []
    assert card.apdu_count == 0
    protocol.verify_signature(result, identity.sign_private_key.public_key(), "result")


def _flip(text: str) -> str:
    raw = bytearray(base64.b64decode(text))
    raw[len(raw) // 2] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


def test_expired_job_is_refused(cms, identity, ledger):
    card = flows.make_desfire_card()
    envelope = cms.envelope(flows.desfire_steps(), flows.desfire_keys(), uid=flows.DESFIRE_UID, ttl=5)
    result = _execute(envelope, identity, ledger, card, now=time.time() + 6)
    _assert_refused(result, identity, card, "expired")
    assert ledger.state(envelope["job_id"]) is None  # refused before the ledger: nothing was claimed


def test_job_for_another_station_is_refused(cms, identity, ledger):
    card = flows.make_desfire_card()
    envelope = cms.envelope(flows.desfire_steps(), flows.desfire_keys(), uid=flows.DESFIRE_UID,
                            station="line1-st2")
    _assert_refused(_execute(envelope, identity, ledger, card), identity, card, "station")


def test_replayed_job_runs_once(cms, identity, ledger):
    card = flows.make_desfire_card()
    envelope = cms.envelope(flows.desfire_steps(), flows.desfire_keys(), uid=flows.DESFIRE_UID)
    assert _execute(envelope, identity, ledger, card)["state"] == "succeeded"
    sent = card.apdu_count
    again = _execute(envelope, identity, ledger, card)
    assert again["state"] == "refused" and again["error"]["reason"] == "replay"
    assert card.apdu_count == sent
    assert ledger.state(envelope["job_id"]) == "succeeded"


@pytest.mark.parametrize("field", ["script", "station", "expires_at", "card", "sealed_keys", "job_id"])
def test_tampered_envelope_is_refused(cms, identity, ledger, field):
    card = flows.make_desfire_card()
    envelope = dict(cms.envelope(flows.desfire_steps(), flows.desfire_keys(), uid=flows.DESFIRE_UID))
    envelope[field] = {
        "script": {"version": 1, "steps": flows.desfire_steps()[:3]},
        "station": identity.station + "x", "expires_at": envelope["expires_at"] + 3600,
        "card": {"uid": "04000000000000", "chip_type": "desfire_ev2"},
        "sealed_keys": _flip(envelope["sealed_keys"]), "job_id": "another-job"}[field]
    _assert_refused(_execute(envelope, identity, ledger, card), identity, card, "signature")


def test_forged_envelope_signed_by_another_key_is_refused(cms, identity, ledger):
    card = flows.make_desfire_card()
    envelope = cms.envelope(flows.desfire_steps(), flows.desfire_keys(), uid=flows.DESFIRE_UID)
    forged = protocol.sign_with(envelope, Ed25519PrivateKey.generate())
    _assert_refused(_execute(forged, identity, ledger, card), identity, card, "signature")
    unknown_version = protocol.sign_with({**envelope, "signing_key_version": 2}, cms.key)
    _assert_refused(_execute(unknown_version, identity, ledger, card), identity, card, "signature")


def test_tampered_sealed_keys_signed_by_the_cms_are_refused(cms, identity, ledger):
    """The signature holds (the CMS signed the blob) but the blob does not open: sealed, not run."""
    card = flows.make_desfire_card()
    envelope = cms.envelope(flows.desfire_steps(), flows.desfire_keys(), uid=flows.DESFIRE_UID)
    resigned = protocol.sign_with({**envelope, "sealed_keys": _flip(envelope["sealed_keys"])}, cms.key)
    _assert_refused(_execute(resigned, identity, ledger, card), identity, card, "sealed")
    assert ledger.state(envelope["job_id"]) == "refused"


def test_sealed_keys_of_another_station_do_not_open(cms, identity, ledger):
    card = flows.make_desfire_card()
    envelope = cms.envelope(flows.desfire_steps(), flows.desfire_keys(), uid=flows.DESFIRE_UID,
                            seal_station="line1-st2")
    _assert_refused(_execute(envelope, identity, ledger, card), identity, card, "sealed")


def test_script_naming_a_ref_not_sealed_is_refused(cms, identity, ledger):
    card = flows.make_desfire_card()
    keys = flows.desfire_keys()
    del keys["kv-3"]
    envelope = cms.envelope(flows.desfire_steps(), keys, uid=flows.DESFIRE_UID)
    result = _execute(envelope, identity, ledger, card)
    _assert_refused(result, identity, card, "unknown_ref")
    assert "kv-3" in result["error"]["message"]


def test_job_for_another_card_is_refused(cms, identity, ledger):
    card = flows.make_desfire_card()
    envelope = cms.envelope(flows.desfire_steps(), flows.desfire_keys(), uid=flows.DESFIRE_UID)
    _assert_refused(_execute(envelope, identity, ledger, card, card_uid="04000000000001"), identity, card,
                    "card")


@pytest.mark.parametrize("envelope", [None, "job", {"v": 1}, {"v": 2, "job_id": "x"}])
def test_malformed_envelope_is_refused(identity, ledger, envelope):
    card = flows.make_desfire_card()
    result = _execute(envelope, identity, ledger, card)
    assert result["state"] == "refused"
    assert result["error"]["reason"] in ("malformed", "signature")
    assert card.apdu_count == 0
