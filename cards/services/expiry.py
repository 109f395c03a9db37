"""Jobs that will never report: the expiry sweep (NoResult, probe next), redelivery counting and poison."""
from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit.services import EventBatch
from cards.compiler import CREATE_OPS
from cards.models import Card, Job
from cards.models.cards import CardState
from cards.models.orders import JobState
from cards.services.jobs_common import NO_RESULT, OPEN_JOB_STATES, POISON, _station_event, job_ttl_seconds


def _stale_before():
    """Jobs created before this are past their expiry plus the agent's task time limit: no result can
    still be on its way that the station would have been allowed to produce."""
    return timezone.now() - timedelta(seconds=job_ttl_seconds() + settings.CELERY_TASK_TIME_LIMIT)


def jobs_expire_sweep() -> dict:
    """Beat (`cards.expire_jobs`): every open job that can no longer report is failed as NoResult and
    its card flagged for a probe now, not only when the card is next presented (the dashboard, the
    orders and the alert rules see it; the next presentation probes before anything else)."""
    card_ids = list(Job.objects.filter(state__in=OPEN_JOB_STATES, created_at__lt=_stale_before())
                    .values_list("card_id", flat=True).distinct()[:1000])
    expired = 0
    for card_id in card_ids:
        with transaction.atomic(), EventBatch() as events:
            card = Card.objects.select_for_update().filter(pk=card_id).first()
            if card is not None:
                expired += _expire_stale_jobs(card, events)
    return {"cards": len(card_ids), "expired": expired}


def _expire_stale_jobs(card: Card, events: EventBatch | None = None) -> int:
    """An open job past its expiry plus the task time limit never reported: assume the worst, probe next."""
    limit = _stale_before()
    count = 0
    for job in card.jobs.select_for_update().filter(state__in=OPEN_JOB_STATES, created_at__lt=limit):
        if job.deliveries > settings.CMS_JOB_MAX_DELIVERIES:
            _poison(job, card, events)
            count += 1
            continue
        job.move_to(JobState.FAILED)
        job.error = {"kind": NO_RESULT, "message": "no result arrived before the job's expiry"}
        job.finished_at = timezone.now()
        job.save(update_fields=["state", "error", "finished_at", "updated_at"])
        sent_key_changes = _sent_key_changes(job)
        if sent_key_changes:
            card.probe_required = True
            card.save(update_fields=["probe_required", "updated_at"])
        _station_event("job.expired", job.station, job_id=str(job.id), card_uid=card.uid, result="failure",
                       details={"probe_required": sent_key_changes}, events=events)
        count += 1
    return count


def _sent_key_changes(job: Job) -> bool:
    return any(s.get("confirms") or s.get("op") in CREATE_OPS for s in (job.script or {}).get("steps", []))


def _poison(job: Job, card: Card, events: EventBatch | None) -> None:
    """A job delivered more than CMS_JOB_MAX_DELIVERIES times without ever finishing (each copy crashes
    the agent, or the agent refuses it as a replay): it fails `poison` and the card is quarantined, so
    no new copy goes out until a person has looked (no endless loop). What it may have done is unknown:
    the card is probed once released."""
    job.move_to(JobState.FAILED)
    job.error = {"kind": POISON, "message": f"delivered {job.deliveries} times without a result "
                                            f"(CMS_JOB_MAX_DELIVERIES {settings.CMS_JOB_MAX_DELIVERIES})"}
    job.finished_at = timezone.now()
    job.save(update_fields=["state", "error", "finished_at", "deliveries", "updated_at"])
    card.state = CardState.QUARANTINED
    card.state_reason = f"poison job {job.id}: delivered {job.deliveries} times, never finished"[:200]
    card.probe_required = card.probe_required or _sent_key_changes(job)
    card.save(update_fields=["state", "state_reason", "probe_required", "updated_at"])
    _station_event("job.poisoned", job.station, job_id=str(job.id), card_uid=card.uid, result="failure",
                   details={"deliveries": job.deliveries}, events=events)
    _station_event("card.quarantined", job.station, job_id=str(job.id), card_uid=card.uid, result="failure",
                   details={"reason": card.state_reason, "kind": POISON}, events=events)


def _count_redelivery(job_pk) -> dict | None:
    """A copy the station refused as a replay is one more delivery of a job that has not finished."""
    with transaction.atomic(), EventBatch() as events:
        job = Job.objects.select_for_update(of=("self",)).select_related("station").get(pk=job_pk)
        if job.state not in OPEN_JOB_STATES:
            return None
        job.deliveries += 1
        if job.deliveries <= settings.CMS_JOB_MAX_DELIVERIES:
            job.save(update_fields=["deliveries", "updated_at"])
            return None
        card = Card.objects.select_for_update().get(pk=job.card_id)
        _poison(job, card, events)
    return {"status": "recorded", "job": str(job.id), "state": job.state, "quarantined": True,
            "error": job.error}
