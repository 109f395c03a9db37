"""A poison job (issue 6): every copy of it crashes the agent, so it never reports. The station's replay
ledger refuses each redelivered copy, the job expires, the next presentation sends the same work again,
and so on forever. The CMS counts deliveries of the unfinished work (each dispatch resuming a job that never
reported, each copy refused as a replay) and after CMS_JOB_MAX_DELIVERIES the job fails `poison` and the
card is quarantined (audited): nothing more goes out until a person releases it."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from audit.models import AuditEvent
from cards import tasks
from cards.models import Card, Job

from .conftest import DESFIRE_UID

pytestmark = [pytest.mark.vault, pytest.mark.django_db]

REPLAY_ERROR = {"step": None, "op": None, "apdu": None, "sw": None, "meaning": None, "kind": "ProtocolError",
                "message": "job was already received by this station", "authentication": False,
                "reason": "replay"}


def _present(cms, station) -> dict:
    return cms.report(station.report("card_presented", uid=DESFIRE_UID))


def _expire(job_id: str) -> None:
    Job.objects.filter(pk=job_id).update(created_at=timezone.now() - timedelta(hours=1))
    tasks.expire_jobs.run()


def test_a_job_that_crashes_the_agent_on_every_delivery_is_quarantined(cms, station, desfire_profile,
                                                                       order_for, settings, sent):
    assert settings.CMS_JOB_MAX_DELIVERIES == 3
    order_for(desfire_profile)
    assert _present(cms, station)["status"] == "dispatched"
    first = cms.last_envelope()
    assert Job.objects.get(pk=first["job_id"]).deliveries == 1
    # the agent crashed; the broker redelivers; the restarted agent refuses the copy as a replay
    refusal = station.result(first, state="refused", upto=0, error=dict(REPLAY_ERROR))
    assert cms.result(refusal) == {"status": "refused", "reason": "replay_copy"}
    assert Job.objects.get(pk=first["job_id"]).deliveries == 2
    _expire(first["job_id"])
    assert Job.objects.get(pk=first["job_id"]).error["kind"] == "NoResult"

    assert _present(cms, station)["status"] == "dispatched"  # the same work again (a probe first)
    second = cms.last_envelope()
    job = Job.objects.get(pk=second["job_id"])
    assert str(job.resumes_id) == first["job_id"] and job.deliveries == 3
    outcome = cms.result(station.result(second, state="refused", upto=0, error=dict(REPLAY_ERROR)))
    assert outcome["quarantined"] is True and outcome["state"] == "failed"
    job.refresh_from_db()
    assert job.state == "failed" and job.error["kind"] == "poison" and job.deliveries == 4
    card = Card.objects.get(uid=DESFIRE_UID)
    assert card.state == "quarantined" and "poison" in card.state_reason
    event = AuditEvent.objects.get(action="card.quarantined", job_id=second["job_id"])
    assert event.result == "failure" and event.details["kind"] == "poison"
    assert AuditEvent.objects.filter(action="job.poisoned", job_id=second["job_id"]).exists()
    # no endless loop: the card gets nothing until a person releases it
    dispatched = len(sent)
    assert _present(cms, station)["status"] == "refused"
    assert len(sent) == dispatched


def test_jobs_that_never_report_are_quarantined_after_max_deliveries(cms, station, desfire_profile, order_for,
                                                                     settings):
    settings.CMS_JOB_MAX_DELIVERIES = 2
    order_for(desfire_profile)
    ids = []
    for _ in range(3):
        assert _present(cms, station)["status"] == "dispatched"
        ids.append(cms.last_envelope()["job_id"])
        _expire(ids[-1])
    assert [Job.objects.get(pk=i).deliveries for i in ids] == [1, 2, 3]
    assert [Job.objects.get(pk=i).error["kind"] for i in ids] == ["NoResult", "NoResult", "poison"]
    assert Card.objects.get(uid=DESFIRE_UID).state == "quarantined"
    assert _present(cms, station)["status"] == "refused"


def test_a_job_resuming_one_that_reported_starts_its_count_again(cms, station, desfire_profile, order_for):
    order_for(desfire_profile)
    _present(cms, station)
    first = cms.last_envelope()
    cms.result(station.result(first, state="interrupted", upto=1,
                              error={"step": 1, "kind": "CardRemovedError", "message": "removed"}))
    _present(cms, station)
    second = Job.objects.get(pk=cms.last_envelope()["job_id"])
    assert str(second.resumes_id) == first["job_id"] and second.deliveries == 1
