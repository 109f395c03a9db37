"""JCOP resume after a lost answer to INSTALL or DELETE on a card already SECURED: sent again, INSTALL of an
instance the card made is refused (6A80) and DELETE of one it removed too (6A88), so the CMS first reads
the card's registry (GET STATUS P1=40 applications and P1=20 load files, GP 2.3 11.4, in a channel opened
with the ACTIVE keys) and sends only what the registry does not show done. cardsim JCOP 4 and the agent's
step runner."""
from __future__ import annotations

import copy

import pytest

from cardproto.errors import CardRemovedError
from cards.models import Card, CardProfile
from cardsim.jcop.card import JCOP4Card
from cardsim.jcop.model import SD_MODULE_AID, SD_PACKAGE_AID, SECURED, Application

from .conftest import JCOP_SPEC, JCOP_UID
from .test_virtual_cards import _run

pytestmark = [pytest.mark.vault, pytest.mark.django_db]
NEW_APP = "A00000061700CAFE000102"
OLD_APP = "A00000061700CAFE000103"
INS = {"install": 0xE6, "delete": 0xE4}


class LostAnswer:
    """The card gets INSTALL / DELETE (`executed`) or not, and either way its answer never arrives."""

    def __init__(self, chip: JCOP4Card, ins: int, executed: bool):
        self.chip, self.ins, self.executed = chip, ins, executed

    def transmit(self, apdu: bytes) -> bytes:
        if len(apdu) > 1 and apdu[1] == self.ins:
            if self.executed:
                self.chip.transmit(apdu)
            raise CardRemovedError("card left the field", command=f"INS {self.ins:02X}")
        return self.chip.transmit(apdu)


def _spec() -> dict:
    spec = copy.deepcopy(JCOP_SPEC)
    spec.update(lock=False, delete=[OLD_APP], install=[{"package_aid": SD_PACKAGE_AID.hex().upper(),
                                                        "module_aid": SD_MODULE_AID.hex().upper(),
                                                        "aid": NEW_APP}])
    return spec


@pytest.mark.parametrize(("lost", "executed", "resent"), [
    ("install", True, []),                 # the instance exists: not installed again
    ("install", False, ["gp.install"]),    # the card never got it: installed now
    ("delete", True, ["gp.install"]),      # the old instance is gone: not deleted again
    ("delete", False, ["gp.delete", "gp.install"]),
])
def test_a_lost_install_or_delete_is_settled_by_the_registry_not_resent_blindly(cms, station, acme, masters,
                                                                                order_for, lost, executed,
                                                                                resent):
    profile = CardProfile.objects.create(tenant=acme, name="fob-apps", chip_family="jcop", spec=_spec())
    order_for(profile, uids=[JCOP_UID])
    chip = JCOP4Card(uid=bytes.fromhex(JCOP_UID), kdd=bytes.fromhex(JCOP_UID), life_cycle=SECURED)
    old = bytes.fromhex(OLD_APP)
    chip.apps[old] = Application(old, SD_PACKAGE_AID, SD_MODULE_AID)
    cms.report(station.report("card_presented", uid=JCOP_UID))
    first = _run(station, cms.last_envelope(), LostAnswer(chip, INS[lost], executed))
    assert first["state"] == "interrupted", first["error"]
    assert (bytes.fromhex(NEW_APP) in chip.apps) == (lost == "install" and executed)
    assert (old in chip.apps) == (lost == "delete" and not executed)  # DELETE comes before INSTALL
    cms.result(first)

    chip.power_on()
    cms.report(station.report("card_presented", uid=JCOP_UID))
    probe = cms.last_envelope()
    steps = probe["script"]["steps"]
    assert [s["op"] for s in steps] == ["select", "gp.open_scp03", "gp.get_status", "gp.get_status"]
    assert steps[1]["kvn"] == 0x31  # the active, confirmed set: never a guessed key
    assert [(s["scope"], s["label"]) for s in steps[2:]] == [
        ("applications", "probe.registry.applications"), ("load_files", "probe.registry.load_files")]
    result = _run(station, probe, chip)
    assert result["state"] == "succeeded", result["error"]
    listed = result["steps"][2]["observed"]["aids"]
    assert (NEW_APP in listed) == (lost == "install" and executed)
    assert SD_PACKAGE_AID.hex().upper() in result["steps"][3]["observed"]["aids"]
    outcome = cms.result(result)
    assert outcome["state"] == "succeeded" and outcome["next_job"]

    resumed = cms.last_envelope()
    assert resumed["job_id"] == outcome["next_job"]
    ops = [s["op"] for s in resumed["script"]["steps"]]
    assert ops == ["select", "gp.open_scp03", *resent, "gp.store_data"]
    final = _run(station, resumed, chip)
    assert final["state"] == "succeeded", final["error"]
    assert cms.result(final)["state"] == "succeeded"
    assert bytes.fromhex(NEW_APP) in chip.apps and old not in chip.apps
    assert Card.objects.get(uid=JCOP_UID).state == "active"
    assert cms.report(station.report("card_presented", uid=JCOP_UID))["status"] == "nothing_to_do"
