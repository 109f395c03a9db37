"""A job the expiry sweep failed NoResult takes its own result when that comes late (issue 6): a result that
arrived while Vault, the audit key or the database was down is retried by its task, and the sweep (run by
another worker process that still could) may have closed the job meanwhile. Before, the result was refused
as a replay: the card held the new keys, the ledger kept them pending until a probe. Once the card has a
newer job (presented again: probed), the late result is still refused: the probe decides."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings

from audit.models import AuditEvent
from cards.models import Card, Job
from cards.services import jobs
from keys.models import KeyVersion

from .conftest import DESFIRE_UID

pytestmark = [pytest.mark.vault, pytest.mark.django_db]


@pytest.fixture
def expired(cms, station, desfire_profile, order_for):
    order_for(desfire_profile)
    cms.report(station.report("card_presented", uid=DESFIRE_UID))
    envelope = cms.last_envelope()
    stale = timedelta(seconds=jobs.job_ttl_seconds() + settings.CELERY_TASK_TIME_LIMIT + 1)
    job = Job.objects.get(pk=envelope["job_id"])
    Job.objects.filter(pk=job.pk).update(created_at=job.created_at - stale)
    assert jobs.jobs_expire_sweep()["expired"] == 1
    job.refresh_from_db()
    assert job.state == "failed" and job.error["kind"] == "NoResult"
    assert Card.objects.get(uid=DESFIRE_UID).probe_required
    return envelope


def _states() -> set[str]:
    return set(KeyVersion.objects.filter(slot__card__uid=DESFIRE_UID).values_list("state", flat=True))


def test_an_expired_jobs_late_result_moves_the_ledger_once(cms, station, expired):
    outcome = cms.result(station.result(expired))
    assert outcome["status"] == "recorded" and outcome["state"] == "succeeded", outcome
    job = Job.objects.select_related("order").get(pk=expired["job_id"])
    assert job.state == "succeeded" and job.order.cards_done == 1 and not job.error
    assert _states() == {"active"}
    card = Card.objects.get(uid=DESFIRE_UID)
    assert card.state == "active" and not card.probe_required
    late = AuditEvent.objects.get(action="job.late_result", job_id=expired["job_id"])
    assert late.details["previous_state"] == "failed" and late.details["previous_error"]["kind"] == "NoResult"
    assert cms.result(station.result(expired)) == {"status": "refused", "reason": "replay"}
    assert Job.objects.select_related("order").get(pk=expired["job_id"]).order.cards_done == 1


def test_a_late_result_with_a_step_in_flight_keeps_the_card_flagged(cms, station, expired):
    steps = expired["script"]["steps"]
    change = next(i for i, s in enumerate(steps) if s.get("label") == "app.F0A001.1.change")
    removed = {"step": change, "op": "desfire.change_key", "kind": "CardRemovedError",
               "message": "card left the field"}
    outcome = cms.result(station.result(expired, state="interrupted", upto=change,
                                        statuses={change: "in_flight"}, error=removed))
    assert outcome["state"] == "interrupted" and outcome["probe_required"], outcome
    assert Card.objects.get(uid=DESFIRE_UID).probe_required


def test_no_late_result_once_the_card_was_presented_again(cms, station, expired):
    assert cms.report(station.report("card_presented", uid=DESFIRE_UID))["status"] == "dispatched"
    probe = cms.last_envelope()
    assert probe["job_id"] != expired["job_id"]
    assert cms.result(station.result(expired)) == {"status": "refused", "reason": "replay"}
    job = Job.objects.get(pk=expired["job_id"])
    assert job.state == "failed" and job.error["kind"] == "NoResult"
    assert "pending" in _states()  # the probe decides what the card holds
