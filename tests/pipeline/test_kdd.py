"""JCOP ISD keys are diversified from the card's GP KDD (GET DATA 'CF'), not the reader's 7-byte UID.

The virtual card is the project's default JCOP4Card (7-byte UID, 10-byte KDD its INITIALIZE UPDATE
answer starts with, GP Card Spec 2.3); the KDF3 construction itself is checked against the
GlobalPlatformPro vectors in tests/cardproto/test_kdf.py. Here the compiled scripts run on that card
in-process (keys from real OpenBao, sealed and signed by the CMS) and the results go back to the CMS.
"""
from __future__ import annotations

import time

import pytest

from audit.models import AuditEvent
from cardproto import kdf
from cards.models import Card, Job
from cardsim.jcop.card import JCOP4Card
from keys import keystore
from keys.models import KeyVersion
from readeragent import executor, monitor, protocol

pytestmark = [pytest.mark.vault, pytest.mark.django_db]

ISD_AID = "a000000151000000"


class _Pyscard:
    def __init__(self, card) -> None:
        self.card = card

    def transmit(self, apdu: list[int]):
        answer = self.card.transmit(bytes(apdu))
        return list(answer[:-2]), answer[-2], answer[-1]


def _present(cms, station, card: JCOP4Card, **override) -> dict:
    """What the monitor reports for `card` (its own UID and KDD reads), possibly overridden."""
    link = _Pyscard(card)
    fields = {"uid": monitor.read_uid(link), "atr": card.atr.hex().upper(), "chip_type": "jcop4",
              "kdd": monitor.read_kdd(link), **override}
    fields = {k: v for k, v in fields.items() if v is not None}
    return cms.report(station.report("card_presented", **fields))


def _run(station, envelope, card, *, upto: int | None = None) -> dict:
    keys = station.open(envelope)
    steps = envelope["script"]["steps"][:upto]
    kdd = envelope["card"].get("kdd")
    try:
        outcome = executor.run_steps(steps, card, keys, chip_type=envelope["card"]["chip_type"],
                                     kdd=bytes.fromhex(kdd) if kdd else None)
    finally:
        protocol.wipe_keys(keys)
    doc = {"v": 1, "job_id": envelope["job_id"], "station": station.code, **outcome,
           "steps_done": sum(1 for s in outcome["steps"] if s["status"] == "done"),
           "stage": outcome["steps"][-1]["op"] if outcome["steps"] else "",
           "started_at": int(time.time()), "finished_at": int(time.time())}
    return protocol.sign_with(doc, station.sign)


def _kdf3_kcvs(masters, tenant_id, context: bytes) -> list[str]:
    from cardproto.crypto import kcv_aes

    isd_master = masters["isd-master"]
    ref = keystore.BlobRef.parse(isd_master.vault_ref)
    with keystore.unwrap(tenant_id, [ref]) as plain:
        return [kcv_aes(kdf.kdf3_jcop(plain[ref], label, context)).hex()
                for label in (kdf.ENC, kdf.MAC, kdf.DEK)]


def test_a_7_byte_uid_jcop_is_provisioned_with_keys_diversified_from_its_kdd(cms, station, jcop_profile,
                                                                              masters, order_for):
    card = JCOP4Card(seed="kdd-1")
    uid, kdd = card.identity.uid.hex().upper(), card.identity.kdd.hex().upper()
    assert len(card.identity.uid) == 7
    order = order_for(jcop_profile, uids=[uid])
    assert _present(cms, station, card)["status"] == "dispatched"
    envelope = cms.last_envelope()
    assert envelope["card"] == {"uid": uid, "chip_type": "jcop4", "kdd": kdd}
    record = Card.objects.get(uid=uid)
    assert record.kdd == kdd and record.chip_type == "jcop4"

    result = _run(station, envelope, card)
    assert result["state"] == "succeeded", result["error"]
    assert cms.result(result)["state"] == "succeeded"
    record.refresh_from_db()
    order.refresh_from_db()
    assert record.state == "active" and order.state == "completed"
    assert {v.state for v in KeyVersion.objects.filter(slot__card=record)} == {"active"}
    # the card holds KDF3(master, label, KDD) under KVN 31, as an issuer deriving from the KDD expects
    held = {(k["kvn"], k["key_id"]): k["kcv"] for k in card.keys_held()[ISD_AID]}
    assert [held[(0x31, key_id)] for key_id in (1, 2, 3)] == _kdf3_kcvs(masters, record.tenant_id,
                                                                        card.identity.kdd)
    assert _present(cms, station, card)["status"] == "nothing_to_do"


def test_a_7_byte_uid_without_a_kdd_is_refused_without_padding(cms, station, jcop_profile, order_for):
    card = JCOP4Card(seed="kdd-2")
    uid = card.identity.uid.hex().upper()
    order_for(jcop_profile, uids=[uid])
    outcome = _present(cms, station, card, kdd=None)
    assert outcome == {"status": "refused", "reason": "diversification"}
    assert not Card.objects.filter(uid=uid).exists() and not Job.objects.exists()
    event = AuditEvent.objects.filter(action="card.presentation_refused", card_uid=uid).get()
    assert "10-byte KDD" in event.details["message"] and "7-byte UID" in event.details["message"]


def test_a_malformed_kdd_is_refused(cms, station, jcop_profile, order_for):
    card = JCOP4Card(seed="kdd-3")
    order_for(jcop_profile, uids=[card.identity.uid.hex().upper()])
    assert _present(cms, station, card, kdd="0102") == {"status": "refused", "reason": "malformed"}


def test_a_known_card_reporting_another_kdd_is_refused_and_audited(cms, station, jcop_profile, order_for):
    card = JCOP4Card(seed="kdd-4")
    uid, kdd = card.identity.uid.hex().upper(), card.identity.kdd.hex().upper()
    order_for(jcop_profile, uids=[uid])
    first = _present(cms, station, card)
    assert first["status"] == "dispatched"
    swapped = JCOP4Card(seed="kdd-5", uid=card.identity.uid)  # same UID, another chip
    assert swapped.identity.kdd != card.identity.kdd
    assert _present(cms, station, swapped) == {"status": "refused", "reason": "kdd_changed"}
    event = AuditEvent.objects.filter(action="card.kdd_changed", card_uid=uid).get()
    assert event.result == "failure" and swapped.identity.kdd.hex().upper() in event.details["message"]
    assert Card.objects.get(uid=uid).kdd == kdd
    assert Job.objects.filter(card__uid=uid).count() == 1


def test_swapped_chip_under_a_dispatched_job_stops_at_initialize_update(cms, station, jcop_profile,
                                                                         order_for):
    """The agent side of the same check: the job's KDD is not the one the card in the reader answers."""
    card = JCOP4Card(seed="kdd-6")
    order_for(jcop_profile, uids=[card.identity.uid.hex().upper()])
    _present(cms, station, card)
    envelope = cms.last_envelope()
    swapped = JCOP4Card(seed="kdd-7", uid=card.identity.uid)
    result = _run(station, envelope, swapped)
    assert result["state"] == "failed" and result["error"]["kind"] == "KddMismatchError"
    assert swapped.ins_counts.get(0x82) is None  # no EXTERNAL AUTHENTICATE
    outcome = cms.result(result)
    assert outcome["state"] == "failed"
    assert {v.state for v in KeyVersion.objects.filter(slot__card__uid=card.identity.uid.hex().upper())} \
        == {"pending"}


def test_probe_and_resume_after_a_lost_put_key_use_the_kdd(cms, station, jcop_profile, masters, order_for):
    card = JCOP4Card(seed="kdd-8")
    uid = card.identity.uid.hex().upper()
    order_for(jcop_profile, uids=[uid])
    _present(cms, station, card)
    first = cms.last_envelope()
    # PUT KEY reaches the card but its answer is lost: run up to it, then report it in flight
    ran = _run(station, first, card, upto=3)
    assert ran["state"] == "succeeded", ran["error"]
    steps = [dict(s) for s in ran["steps"]]
    steps[2]["status"] = "in_flight"
    steps[2].pop("observed", None)
    lost = {k: v for k, v in ran.items() if k != "signature"}
    lost.update(state="interrupted", steps=steps, steps_done=2, stage="gp.put_key",
                error={"step": 2, "op": "gp.put_key", "kind": "CardRemovedError", "message": "removed"})
    cms.result(protocol.sign_with(lost, station.sign))
    assert Card.objects.get(uid=uid).probe_required

    _present(cms, station, card)
    probe = cms.last_envelope()
    assert probe["card"]["kdd"] == card.identity.kdd.hex().upper()
    outcome = cms.result(_run(station, probe, card))
    resumed = cms.last_envelope()
    assert resumed["job_id"] == outcome["next_job"]
    assert resumed["card"]["kdd"] == card.identity.kdd.hex().upper()
    assert resumed["script"]["steps"][1]["kvn"] == 0x31  # opens with the KDD-diversified keys it confirmed
    result = _run(station, resumed, card)
    assert result["state"] == "succeeded", result["error"]
    assert cms.result(result)["state"] == "succeeded"
    assert card.life_cycle == 0x7F
