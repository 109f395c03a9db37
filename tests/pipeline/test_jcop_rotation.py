"""JCOP ISD key rotation on a card that already holds the CMS's keys (cardsim JCOP 4, agent's step runner):
open with the active set, PUT KEY the pending set under a new KVN replacing the old one (GP 2.3 11.8.2.2:
P1 names the set replaced, 00 would add one), KCVs checked, re-open with the new keys; a PUT KEY whose
answer is lost is settled by the key-information probe. Transport KVN 0 with replace is refused."""
from __future__ import annotations

import copy

import pytest

from cardproto.errors import CardRemovedError
from cards.compiler import Held, Ledger, PlanError, compile_plan, isd_kvn
from cards.models import Card, CardProfile
from cardsim.jcop.card import JCOP4Card
from keys import sealing, services
from keys.models import KeySlot, KeyVersion, MasterKey

from .conftest import JCOP_SPEC, JCOP_UID
from .test_virtual_cards import _run

pytestmark = [pytest.mark.vault, pytest.mark.django_db]


@pytest.fixture
def keyed(cms, station, acme, masters, order_for):
    """A JCOP card provisioned by the pipeline (ISD keys v1 at KVN 31), not locked."""
    spec = copy.deepcopy(JCOP_SPEC)
    spec["lock"] = False
    profile = CardProfile.objects.create(tenant=acme, name="fob-open", chip_family="jcop", spec=spec)
    order_for(profile, uids=[JCOP_UID])
    chip = JCOP4Card(uid=bytes.fromhex(JCOP_UID), kdd=bytes.fromhex(JCOP_UID))
    cms.report(station.report("card_presented", uid=JCOP_UID))
    assert cms.result(_run(station, cms.last_envelope(), chip))["state"] == "succeeded"
    assert 0x31 in chip.key_sets and 0x30 not in chip.key_sets  # (0x20: cardsim's SCP02 factory set)
    return chip


def _rotation_pending(acme) -> list[KeyVersion]:
    """A new isd-master version, and pending ISD versions (number 2) of the card diversified from it."""
    master = MasterKey.objects.get(tenant=acme, name="isd-master")
    services.master_key_version_create(master=master, state="active")
    slots = list(KeySlot.objects.filter(card__uid=JCOP_UID).order_by("key_no"))
    return sealing.key_versions_create_pending(slots=slots)


def test_an_already_keyed_card_gets_its_new_isd_keys_under_a_new_kvn(cms, station, acme, keyed):
    pending = _rotation_pending(acme)
    assert {v.number for v in pending} == {2}
    cms.report(station.report("card_presented", uid=JCOP_UID))
    envelope = cms.last_envelope()
    steps = envelope["script"]["steps"]
    opens = [s for s in steps if s["op"] == "gp.open_scp03"]
    put_key = next(s for s in steps if s["op"] == "gp.put_key")
    assert [o["kvn"] for o in opens] == [0x31, 0x32]  # the active set opens, the new one proves itself
    assert (put_key["kvn"], put_key["replace_kvn"]) == (0x32, 0x31)
    assert put_key["confirms"] == {"key_versions": [v.pk for v in pending]}
    assert not any(s["op"] in ("gp.store_data",) for s in steps)  # already done: not written again

    result = _run(station, envelope, keyed)
    assert result["state"] == "succeeded", result["error"]
    observed = next(s for s in result["steps"] if s["op"] == "gp.put_key")["observed"]
    assert observed["kcv_match"] is True
    assert 0x32 in keyed.key_sets and 0x31 not in keyed.key_sets  # replaced, not added beside the old set
    assert cms.result(result)["state"] == "succeeded"
    states = {(v.number, v.state) for v in KeyVersion.objects.filter(slot__card__uid=JCOP_UID)}
    assert states == {(1, "retired"), (2, "active")}
    # presented again: nothing owed, nothing sent
    assert cms.report(station.report("card_presented", uid=JCOP_UID))["status"] == "nothing_to_do"


def test_a_rotation_whose_put_key_answer_is_lost_is_probed_then_settled(cms, station, acme, keyed):
    _rotation_pending(acme)

    class LostAnswerAtPutKey:
        def transmit(self, apdu: bytes) -> bytes:
            answer = keyed.transmit(apdu)
            if len(apdu) > 1 and apdu[1] == 0xD8:
                raise CardRemovedError("card left the field", command="PUT KEY")
            return answer

    cms.report(station.report("card_presented", uid=JCOP_UID))
    first = _run(station, cms.last_envelope(), LostAnswerAtPutKey())
    assert first["state"] == "interrupted"
    assert next(s for s in first["steps"] if s["op"] == "gp.put_key")["status"] == "in_flight"
    assert cms.result(first)["probe_required"] is True

    keyed.power_on()
    cms.report(station.report("card_presented", uid=JCOP_UID))
    probe = cms.last_envelope()
    info = next(s for s in probe["script"]["steps"] if s["op"] == "gp.key_information")
    assert info["expect_kvn"] == 0x32
    assert not any(s["op"].startswith("gp.open") for s in probe["script"]["steps"])
    assert cms.result(_run(station, probe, keyed))["state"] == "succeeded"
    card = Card.objects.get(uid=JCOP_UID)
    assert not card.probe_required
    states = {(v.number, v.state) for v in KeyVersion.objects.filter(slot__card__uid=JCOP_UID)}
    assert states == {(1, "retired"), (2, "active")}  # the card listed KVN 32: it took the new set


def test_transport_kvn_0_is_not_replaced_blindly(acme):
    spec = copy.deepcopy(JCOP_SPEC)
    spec["isd"]["transport_keys"]["kvn"] = 0
    profile = CardProfile(tenant=acme, name="kvn0", chip_family="jcop", spec=spec)
    card = Card(tenant=acme, uid=JCOP_UID, chip_type="jcop4")
    isd = ("isd.enc", "isd.mac", "isd.dek")
    ledger = Ledger(masters={"gp-test-key": 1, "isd-master": 2},
                    pending={label: Held(10 + n, 1) for n, label in enumerate(isd)})
    with pytest.raises(PlanError, match=r"PUT KEY with P1 00 adds a key set"):
        compile_plan(card, profile, ledger)
    spec["isd"]["new_keys"]["replace"] = False  # adding beside the transport set, deliberately
    plan = compile_plan(card, CardProfile(tenant=acme, name="kvn0", chip_family="jcop", spec=spec), ledger)
    put_key = next(s for s in plan.steps if s["op"] == "gp.put_key")
    assert "replace_kvn" not in put_key and put_key["kvn"] == 0x31


def test_isd_kvn_cycles_through_01_to_7f():
    assert [isd_kvn(0x31, n) for n in (1, 2, 3)] == [0x31, 0x32, 0x33]
    assert isd_kvn(0x7F, 1) == 0x7F and isd_kvn(0x7F, 2) == 0x01
