"""JCOP resume after a lost answer to SET STATUS (issue 6): the card took SECURED / CARD_LOCKED but the
agent never heard it. Re-sending STORE DATA / SET STATUS would get 6985 on every presentation, so the CMS
reads the card life cycle first (GET STATUS P1=80, GP 2.3 11.4, in a channel opened with the ACTIVE keys)
and sends only what the life cycle does not prove done. cardsim JCOP 4 and the agent's step runner."""
from __future__ import annotations

import copy

import pytest

from cardproto.errors import CardRemovedError
from cards.compiler import CARD_LOCKED, SECURED
from cards.models import Card, CardProfile
from cardsim.jcop.card import JCOP4Card

from .conftest import JCOP_SPEC, JCOP_UID
from .test_virtual_cards import _run

pytestmark = [pytest.mark.vault, pytest.mark.django_db]


class LostAnswerAtSetStatus:
    """The card executes SET STATUS to `state`, then leaves the field before its answer arrives."""

    def __init__(self, chip: JCOP4Card, state: int):
        self.chip, self.state = chip, state

    def transmit(self, apdu: bytes) -> bytes:
        answer = self.chip.transmit(apdu)
        if len(apdu) > 3 and apdu[1] == 0xF0 and apdu[3] == self.state:
            raise CardRemovedError("card left the field", command="SET STATUS")
        return answer


# CARD_LOCKED is not settled by the probe: cardsim's locked ISD refuses GET STATUS with 6985, which proves no
# life cycle (test_a_refused_life_cycle_probe_asks_for_a_person below)
@pytest.mark.parametrize("lost, resent", [(SECURED, ["gp.lock_card"])])
def test_a_lost_set_status_is_settled_by_the_life_cycle_not_resent(cms, station, acme, masters, order_for,
                                                                    lost, resent):
    profile = CardProfile.objects.create(tenant=acme, name="fob", chip_family="jcop",
                                         spec=copy.deepcopy(JCOP_SPEC))
    assert profile.spec["lock"] and profile.spec["store_data"]
    order_for(profile, uids=[JCOP_UID])
    chip = JCOP4Card(uid=bytes.fromhex(JCOP_UID), kdd=bytes.fromhex(JCOP_UID))
    cms.report(station.report("card_presented", uid=JCOP_UID))
    first = _run(station, cms.last_envelope(), LostAnswerAtSetStatus(chip, lost))
    assert first["state"] == "interrupted"
    assert chip.life_cycle == lost  # the card did it; the CMS does not know
    cms.result(first)

    chip.power_on()
    cms.report(station.report("card_presented", uid=JCOP_UID))
    probe = cms.last_envelope()
    steps = probe["script"]["steps"]
    assert [s["op"] for s in steps] == ["select", "gp.open_scp03", "gp.get_status"]
    assert steps[1]["kvn"] == 0x31  # the active, confirmed set: never a guessed key
    assert steps[2] == {"op": "gp.get_status", "scope": "isd", "label": "probe.life_cycle"}
    result = _run(station, probe, chip)
    assert result["state"] == "succeeded", result["error"]
    observed = result["steps"][2]["observed"]
    assert observed == ({"entries": 1, "life_cycle": SECURED} if lost == SECURED else {"refused_sw": "6985"})
    outcome = cms.result(result)
    assert outcome["state"] == "succeeded"

    card = Card.objects.get(uid=JCOP_UID)
    if resent:
        resumed = cms.last_envelope()
        assert resumed["job_id"] == outcome["next_job"]
        ops = [s["op"] for s in resumed["script"]["steps"]]
        assert ops == ["select", "gp.open_scp03", *resent]  # no STORE DATA, no SET STATUS SECURED again
        final = _run(station, resumed, chip)
        assert final["state"] == "succeeded", final["error"]
        assert cms.result(final)["state"] == "succeeded"
    assert chip.life_cycle == CARD_LOCKED
    card.refresh_from_db()
    assert card.state == "active"
    assert cms.report(station.report("card_presented", uid=JCOP_UID))["status"] == "nothing_to_do"


def test_a_refused_life_cycle_probe_asks_for_a_person(cms, station, acme, masters, order_for, sent):
    """The lost answer was to SET STATUS CARD_LOCKED; the probe's GET STATUS gets 6985 (ISO 7816-4
    "conditions of use not satisfied"; GP 2.3 11.4 names no 6985 for GET STATUS). The CMS assumes no
    life cycle: the card is quarantined as life_cycle_unknown, nothing is sent again, and after a person
    releases it the next presentation reads the life cycle again (never a STORE DATA / SET STATUS blind)."""
    from django.contrib.auth import get_user_model

    from audit.models import AuditEvent
    from cards.services.jobs import card_release

    profile = CardProfile.objects.create(tenant=acme, name="fob", chip_family="jcop",
                                         spec=copy.deepcopy(JCOP_SPEC))
    order_for(profile, uids=[JCOP_UID])
    chip = JCOP4Card(uid=bytes.fromhex(JCOP_UID), kdd=bytes.fromhex(JCOP_UID))
    cms.report(station.report("card_presented", uid=JCOP_UID))
    first = _run(station, cms.last_envelope(), LostAnswerAtSetStatus(chip, CARD_LOCKED))
    assert first["state"] == "interrupted" and chip.life_cycle == CARD_LOCKED
    cms.result(first)

    chip.power_on()
    cms.report(station.report("card_presented", uid=JCOP_UID))
    probe = cms.last_envelope()
    assert [s["op"] for s in probe["script"]["steps"]] == ["select", "gp.open_scp03", "gp.get_status"]
    result = _run(station, probe, chip)
    assert result["steps"][2]["observed"] == {"refused_sw": "6985"}
    outcome = cms.result(result)
    assert outcome["state"] == "succeeded" and "next_job" not in outcome  # nothing follows on its own

    card = Card.objects.get(uid=JCOP_UID)
    assert card.state == "quarantined" and card.state_reason.startswith("life_cycle_unknown: ")
    assert "6985" in card.state_reason
    event = AuditEvent.objects.filter(action="card.quarantined", card_uid=JCOP_UID).get()
    assert event.details["kind"] == "life_cycle_unknown" and event.details["sw"] == "6985"
    before = len(sent)
    again = cms.report(station.report("card_presented", uid=JCOP_UID))
    assert again["status"] == "refused" and len(sent) == before, again  # a quarantined card gets no job

    person = get_user_model().objects.create_superuser(username="checker", password=None)
    card_release(actor=person, card=card, reason="looked at the card")
    cms.report(station.report("card_presented", uid=JCOP_UID))
    reread = cms.last_envelope()
    assert reread["job_id"] != probe["job_id"]
    assert [s["op"] for s in reread["script"]["steps"]] == ["select", "gp.open_scp03", "gp.get_status"]
