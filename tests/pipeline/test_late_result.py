"""A copy of a job refused as expired ended the job 'refused', but an earlier copy ran on the card: the
CMS takes that copy's result when it comes (issue 6). Before, the result was refused as a replay of a
finished job: the card held the new keys, the ledger kept the old ones, and the next job authenticated
with a wrong key. The agent now checks its replay ledger before the expiry (tests/readeragent/
test_replay_ledger.py); this is the CMS's side, for a result that raced the refusal between two workers or
a station that still checks the expiry first."""
from __future__ import annotations

import pytest

from audit.models import AuditEvent
from cards.models import Card, Job
from keys.models import KeyVersion

from .conftest import DESFIRE_UID

pytestmark = [pytest.mark.vault, pytest.mark.django_db]

EXPIRED = {"step": None, "op": None, "apdu": None, "sw": None, "meaning": None, "kind": "ProtocolError",
           "message": "job expired before it started", "authentication": False, "reason": "expired"}


@pytest.fixture
def dispatched(cms, station, desfire_profile, order_for):
    order_for(desfire_profile)
    cms.report(station.report("card_presented", uid=DESFIRE_UID))
    return cms.last_envelope()


def _states(uid=DESFIRE_UID) -> set[str]:
    return set(KeyVersion.objects.filter(slot__card__uid=uid).values_list("state", flat=True))


def test_the_first_copys_result_after_an_expired_copys_refusal_moves_the_ledger(cms, station, dispatched):
    refusal = station.result(dispatched, state="refused", upto=0, error=dict(EXPIRED))
    assert cms.result(refusal)["state"] == "refused"
    assert Job.objects.get(pk=dispatched["job_id"]).state == "refused"
    outcome = cms.result(station.result(dispatched))
    assert outcome["status"] == "recorded" and outcome["state"] == "succeeded", outcome
    job = Job.objects.select_related("order").get(pk=dispatched["job_id"])
    assert job.state == "succeeded" and job.order.cards_done == 1 and job.steps_done > 0
    assert _states() == {"active"}
    assert Card.objects.get(uid=DESFIRE_UID).state == "active"
    late = AuditEvent.objects.get(action="job.late_result", job_id=dispatched["job_id"])
    assert late.details["previous_state"] == "refused" and late.details["state"] == "succeeded"
    # the ledger moves once: the same result again is a replay
    changed = AuditEvent.objects.filter(action="card.key_changed").count()
    assert cms.result(station.result(dispatched)) == {"status": "refused", "reason": "replay"}
    assert AuditEvent.objects.filter(action="card.key_changed").count() == changed == 4
    assert Job.objects.select_related("order").get(pk=dispatched["job_id"]).order.cards_done == 1


def test_a_refusal_for_another_reason_takes_no_late_result(cms, station, dispatched):
    refusal = station.result(dispatched, state="refused", upto=0, error={**EXPIRED, "reason": "card"})
    assert cms.result(refusal)["state"] == "refused"
    assert cms.result(station.result(dispatched)) == {"status": "refused", "reason": "replay"}
    assert _states() == {"pending"}


def test_a_second_refusal_does_not_replace_the_first(cms, station, dispatched):
    refusal = station.result(dispatched, state="refused", upto=0, error=dict(EXPIRED))
    assert cms.result(refusal)["state"] == "refused"
    assert cms.result(refusal) == {"status": "refused", "reason": "replay"}
    assert AuditEvent.objects.filter(action="job.finished", job_id=dispatched["job_id"]).count() == 1


def test_no_late_result_once_the_card_has_a_newer_job(cms, station, dispatched, sent):
    refusal = station.result(dispatched, state="refused", upto=0, error=dict(EXPIRED))
    assert cms.result(refusal)["state"] == "refused"
    assert cms.report(station.report("card_presented", uid=DESFIRE_UID))["status"] == "dispatched"
    newer = cms.last_envelope()
    assert newer["job_id"] != dispatched["job_id"]
    assert cms.result(station.result(dispatched)) == {"status": "refused", "reason": "replay"}
    assert Job.objects.get(pk=dispatched["job_id"]).state == "refused"
