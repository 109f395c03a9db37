"""A DESFire create whose answer was lost (card pulled after it ran, or before): the next presentation
probes with GetApplicationIDs / GetFileIDs (never authenticating), and the resume creates only what the
card does not list. Run on cardsim by the agent's step runner; a 91DE is never taken for success."""
from __future__ import annotations

import pytest

from cardproto.errors import CardRemovedError
from cards.compiler import Ledger, PlanError, compile_plan
from cards.models import Card, CardProfile, Job
from cardsim.desfire import DESFireCard
from keys.models import KeyVersion

from .conftest import DESFIRE_SPEC, DESFIRE_UID
from .test_virtual_cards import _run

pytestmark = [pytest.mark.vault, pytest.mark.django_db]

CREATE_APPLICATION, CREATE_STD_FILE, CREATE_BACKUP_FILE, CREATE_VALUE_FILE = 0xCA, 0xCD, 0xCB, 0xCC


class PulledAtCreate:
    """Passes APDUs to the card; at the first command with INS `ins` the card leaves: after running it
    (`ran=True`, the answer is lost) or before it reached the card (`ran=False`)."""

    def __init__(self, card, ins: int, ran: bool):
        self.card, self.ins, self.ran, self.pulled = card, ins, ran, False

    def transmit(self, apdu: bytes) -> bytes:
        hit = not self.pulled and len(apdu) > 1 and apdu[1] == self.ins
        if hit and not self.ran:
            self.pulled = True
            raise CardRemovedError("card left the field", command="create")
        answer = self.card.transmit(apdu)
        if hit:
            self.pulled = True
            raise CardRemovedError("card left the field", command="create")
        return answer


@pytest.fixture
def profile(acme, masters):
    spec = {**DESFIRE_SPEC, "picc": {**DESFIRE_SPEC["picc"], "transport_key": {"master": None,
                                                                               "key_type": "aes128"}}}
    return CardProfile.objects.create(tenant=acme, name="campus-lost", chip_family="desfire", spec=spec)


def _present_until_done(cms, station, card, transport) -> list[dict]:
    """Present the card (through `transport` for the first job only) until it is active; every envelope."""
    envelopes = []
    for _ in range(4):
        cms.report(station.report("card_presented", uid=DESFIRE_UID, chip_type="desfire_ev2"))
        answer = {"next_job": True}
        while answer.get("next_job"):
            envelope = cms.last_envelope()
            envelopes.append(envelope)
            card.power_on()
            result = _run(station, envelope, transport if len(envelopes) == 1 else card)
            answer = cms.result(result)
        if Card.objects.get(uid=DESFIRE_UID).state == "active":
            break
    return envelopes


@pytest.mark.parametrize("ran", [True, False], ids=["created-answer-lost", "never-reached-the-card"])
@pytest.mark.parametrize("ins", [CREATE_APPLICATION, CREATE_STD_FILE, CREATE_BACKUP_FILE, CREATE_VALUE_FILE],
                         ids=["application", "std-file", "backup-file", "value-file"])
def test_a_lost_create_is_listed_then_resumed_without_a_duplicate(cms, station, profile, order_for, ins, ran):
    order_for(profile)
    card = DESFireCard("ev2", uid=bytes.fromhex(DESFIRE_UID))
    envelopes = _present_until_done(cms, station, card, PulledAtCreate(card, ins, ran))
    jobs = [Job.objects.get(pk=e["job_id"]) for e in envelopes]
    assert [j.state for j in jobs] == ["interrupted", "succeeded", "succeeded"], [j.error for j in jobs]

    lost = jobs[0].error
    assert lost["kind"] == "CardRemovedError" and lost["op"] in ("desfire.create_application",
                                                                 "desfire.create_file")
    unit = envelopes[0]["script"]["steps"][lost["step"]]["label"]
    probe = envelopes[1]["script"]["steps"]
    ops = {s["op"] for s in probe}
    assert "desfire.authenticate" not in ops and not ops & {"desfire.create_application",
                                                            "desfire.create_file"}
    listing = next(s for s in probe if s["op"] in ("desfire.get_application_ids", "desfire.get_file_ids"))
    assert listing["label"] == ("probe.aids" if ins == CREATE_APPLICATION else "probe.files.F0A001")

    resumed_units = [s.get("label") for s in envelopes[2]["script"]["steps"]]
    # created: the resume does not send it again; never reached the card: the resume creates it
    assert (unit in resumed_units) is (not ran)
    record = Card.objects.get(uid=DESFIRE_UID)
    assert record.state == "active" and not record.probe_required
    assert {v.state for v in KeyVersion.objects.filter(slot__card=record)} == {"active"}
    held = card.keys_held()  # the card itself: one application, every key at its first version
    assert sorted(held) == ["000000", "f0a001"]
    assert [k["version"] for k in held["f0a001"]] == [1, 1, 1]


def test_a_lost_create_on_a_card_that_does_not_list_freely_goes_to_a_person(acme):
    """PICC key settings 0x09 (no free directory listing, bit 1 clear) once applied: no blind create,
    no authenticated probe; the plan refuses with the reason."""
    spec = {**DESFIRE_SPEC, "picc": {**DESFIRE_SPEC["picc"], "key_settings": 0x09}}
    profile = CardProfile(tenant=acme, name="closed", chip_family="desfire", spec=spec)
    card = Card(tenant=acme, uid=DESFIRE_UID, chip_type="desfire_ev2")
    ledger = Ledger(probe_required=True, done={"picc.key_settings"}, unknown_creates={"app.F0A001.create"})
    with pytest.raises(PlanError, match=r"0x09 do not allow listing applications without authentication"):
        compile_plan(card, profile, ledger)
    # before the settings were applied the factory settings (0x0F) list freely: the probe lists
    plan = compile_plan(card, profile, Ledger(probe_required=True, unknown_creates={"app.F0A001.create"}))
    assert [s["op"] for s in plan.steps] == ["desfire.select_application", "desfire.get_application_ids"]
