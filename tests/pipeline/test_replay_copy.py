"""A station's refusal of a redelivered copy of a job ("replay") is not the job's outcome.

Found by tests/e2e/test_pipeline.py::test_redelivered_job_writes_the_card_once under load: the agent ran
the first copy (succeeded) and refused the second (replay) within milliseconds; two CMS worker processes
took both results, the refusal was applied first, the job ended "refused" and the card's real result was
then refused as a replay of a finished job: the ledger never moved although the card holds the new keys.
"""
from __future__ import annotations

import pytest

from audit.models import AuditEvent
from cards.models import Job

from .conftest import DESFIRE_UID

pytestmark = [pytest.mark.vault, pytest.mark.django_db]

REPLAY_ERROR = {"step": None, "op": None, "apdu": None, "sw": None, "meaning": None, "kind": "ProtocolError",
                "message": "job was already received by this station", "authentication": False,
                "reason": "replay"}


@pytest.fixture
def dispatched(cms, station, desfire_profile, order_for):
    order_for(desfire_profile)
    cms.report(station.report("card_presented", uid=DESFIRE_UID))
    return cms.last_envelope()


def test_replay_refusal_first_then_the_real_result(cms, station, dispatched):
    copy = station.result(dispatched, state="refused", upto=0, error=dict(REPLAY_ERROR))
    assert cms.result(copy) == {"status": "refused", "reason": "replay_copy"}
    assert Job.objects.get(pk=dispatched["job_id"]).state == "dispatched"  # still waiting for its result
    assert cms.result(station.result(dispatched))["state"] == "succeeded"
    job = Job.objects.select_related("order").get(pk=dispatched["job_id"])
    assert job.state == "succeeded" and job.order.cards_done == 1
    refusal = AuditEvent.objects.get(action="job.result_refused", result="failure")
    assert refusal.details["reason"] == "replay_copy"


def test_replay_refusal_after_the_result_changes_nothing(cms, station, dispatched):
    assert cms.result(station.result(dispatched))["state"] == "succeeded"
    copy = station.result(dispatched, state="refused", upto=0, error=dict(REPLAY_ERROR))
    assert cms.result(copy)["status"] == "refused"
    assert Job.objects.get(pk=dispatched["job_id"]).state == "succeeded"


def test_other_refusals_still_finish_the_job(cms, station, dispatched):
    expired = station.result(dispatched, state="refused", upto=0, error={**REPLAY_ERROR, "reason": "expired"})
    assert cms.result(expired)["state"] == "refused"
    assert Job.objects.get(pk=dispatched["job_id"]).state == "refused"
