"""The compiled scripts run on the project's virtual cards (cardsim), in-process, by the agent's step runner.

This proves the compiler's output against card semantics (ChangeKey order and old keys, key settings,
file access rights, PUT KEY, STORE DATA, lock), without pcscd or the broker (tests/e2e has those):
the CMS tasks compile, seal and sign; the test opens the keys as the station would, runs the steps
with `readeragent.executor.run_steps` on a `cardsim` card, signs the result and hands it back.
"""
from __future__ import annotations

import time

import pytest

from cardproto.desfire import DESFire
from cards.models import Card
from cardsim.desfire import DESFireCard
from cardsim.jcop.card import JCOP4Card
from keys import keystore
from keys.models import KeyVersion
from readeragent import executor, protocol

from .conftest import DESFIRE_SPEC, DESFIRE_UID, JCOP_UID

pytestmark = [pytest.mark.vault, pytest.mark.django_db]


def _run(station, envelope, card) -> dict:
    keys = station.open(envelope)
    try:
        outcome = executor.run_steps(envelope["script"]["steps"], card, keys,
                                     chip_type=envelope["card"]["chip_type"])
    finally:
        protocol.wipe_keys(keys)
    doc = {"v": 1, "job_id": envelope["job_id"], "station": station.code, **outcome,
           "steps_done": sum(1 for s in outcome["steps"] if s["status"] == "done"),
           "stage": outcome["steps"][-1]["op"] if outcome["steps"] else "",
           "started_at": int(time.time()), "finished_at": int(time.time())}
    return protocol.sign_with(doc, station.sign)


@pytest.mark.parametrize(("flavour", "transport_type"), [("ev2", "aes128"), ("ev1", "2k3des"),
                                                          ("ev3", "aes128")])
def test_desfire_card_is_provisioned_by_the_compiled_script(cms, station, acme, masters, order_for, flavour,
                                                            transport_type):
    from cards.models import CardProfile

    spec = {**DESFIRE_SPEC, "picc": {**DESFIRE_SPEC["picc"],
                                     "transport_key": {"master": None, "key_type": transport_type}}}
    profile = CardProfile.objects.create(tenant=acme, name=f"campus-{flavour}", chip_family="desfire",
                                         spec=spec)
    order_for(profile)
    card = DESFireCard(flavour, uid=bytes.fromhex(DESFIRE_UID))
    cms.report(station.report("card_presented", uid=DESFIRE_UID, chip_type=f"desfire_{flavour}"))
    envelope = cms.last_envelope()
    result = _run(station, envelope, card)
    assert result["state"] == "succeeded", result["error"]
    assert cms.result(result)["state"] == "succeeded"
    record = Card.objects.get(uid=DESFIRE_UID)
    assert record.state == "active" and record.chip_type == f"desfire_{flavour}"
    versions = KeyVersion.objects.filter(slot__card=record).select_related("slot__application")
    assert {v.state for v in versions} == {"active"}

    # read back with the keys the ledger says the card holds: file 1 under key 1 (its read key)
    from cards.services.jobs import slot_label

    by_label = {slot_label(v.slot): v for v in versions}
    refs = [f"kv-{by_label['app.F0A001.1'].pk}"]
    from keys.sealing import job_keys_unwrap

    with job_keys_unwrap(card=record, refs=refs) as keys:
        df = DESFire(card)
        df.select_application(bytes.fromhex("F0A001"))
        key = keystore.KeyBytes(keys[refs[0]])
        if flavour == "ev1":
            df.authenticate_aes(1, key)
        else:
            df.authenticate_ev2_first(1, key)
        from cardproto.desfire import CommMode

        assert bytes(df.read_data(1, 0, 3, comm_mode=CommMode.FULL)) == bytes.fromhex("C0FFEE")
        assert df.get_key_version(1) == by_label["app.F0A001.1"].number
        df.close()


def test_desfire_card_pulled_at_every_key_change_ends_with_an_exact_ledger(cms, station, acme, masters,
                                                                           order_for):
    """Removal during ChangeKey: in-flight, probe, resume - until the card is fully provisioned."""
    from cards.models import CardProfile

    spec = {**DESFIRE_SPEC, "picc": {**DESFIRE_SPEC["picc"], "transport_key": {"master": None,
                                                                               "key_type": "aes128"}}}
    profile = CardProfile.objects.create(tenant=acme, name="campus-pull", chip_family="desfire", spec=spec)
    order_for(profile)
    card = DESFireCard("ev2", uid=bytes.fromhex(DESFIRE_UID))

    class PulledDuringChangeKey:
        """Passes APDUs through; the card takes the first ChangeKey (C4), then leaves before answering."""

        def __init__(self):
            self.pulled = False

        def transmit(self, apdu: bytes) -> bytes:
            answer = card.transmit(apdu)
            if not self.pulled and len(apdu) > 1 and apdu[1] == 0xC4:
                self.pulled = True
                from cardproto.errors import CardRemovedError

                raise CardRemovedError("card left the field", command="DESFire ChangeKey")
            return answer

    rounds = []
    for _ in range(12):
        cms.report(station.report("card_presented", uid=DESFIRE_UID, chip_type="desfire_ev2"))
        answer = {"next_job": True}
        while answer.get("next_job"):  # a probe settled the ledger and the CMS sent the resume at once
            envelope = cms.last_envelope()
            card.power_on()
            answer = cms.result(_run(station, envelope, PulledDuringChangeKey()))
            rounds.append(envelope["job_id"])
        if Card.objects.get(uid=DESFIRE_UID).state == "active":
            break
    record = Card.objects.get(uid=DESFIRE_UID)
    assert record.state == "active", rounds
    assert {v.state for v in KeyVersion.objects.filter(slot__card=record)} == {"active"}
    # four ChangeKeys, each pulled once: job, probe, job, probe, ... and a last job that completes
    assert len(rounds) >= 9


def test_jcop_card_is_provisioned_by_the_compiled_script(cms, station, jcop_profile, order_for):
    order_for(jcop_profile, uids=[JCOP_UID])
    card = JCOP4Card(uid=bytes.fromhex(JCOP_UID), kdd=bytes.fromhex(JCOP_UID))
    cms.report(station.report("card_presented", uid=JCOP_UID))
    envelope = cms.last_envelope()
    result = _run(station, envelope, card)
    assert result["state"] == "succeeded", result["error"]
    put_key = next(s for s in result["steps"] if s["op"] == "gp.put_key")
    assert put_key.get("observed", {}).get("kcv_match", True)
    assert cms.result(result)["state"] == "succeeded"
    record = Card.objects.get(uid=JCOP_UID)
    assert record.state == "active"
    assert {v.state for v in KeyVersion.objects.filter(slot__card=record)} == {"active"}
