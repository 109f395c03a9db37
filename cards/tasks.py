"""Celery tasks of the provisioning pipeline, on queue "cms": thin wrappers around cards.services.jobs.

Contract (jobproto.md): the station agent sends `cms.station_report(report)` and
`cms.job_result(result)` with `send_task(name, args=[doc], queue="cms")`. Both are idempotent
(a redelivered report finds its job by presentation key; a redelivered result finds its job
finished and is refused), so they are acked late and retried, with backoff and jitter, only on
the named transient errors: Vault sealed or unreachable, the audit key unavailable, the database
briefly locked. A result is worth more retries than a report: without it the card must be probed.
The return values are small JSON summaries, never keys.

A worker process that dies while it runs one of them (SIGKILL, OOM) does not lose the message:
`reject_on_worker_lost` puts it back on the queue (Celery's default would acknowledge it, and a
result lost that way leaves a card that changed to be probed). A message that killed its worker
more than CMS_JOB_MAX_DELIVERIES times is dropped with an error log instead of looping for ever
(counted in the broker's Redis per message and retry); a dropped result's job expires NoResult
and its card is probed (tests/faults/test_cms_worker_kill.py).
"""
from __future__ import annotations

import structlog
from celery import shared_task
from django.conf import settings
from django.db import OperationalError

from audit.errors import AuditUnavailable
from cards.services import jobs
from cms import failpoints
from cms.errors import KeystoreUnavailable
from cms.periodic import deferred_while_away

log = structlog.get_logger(__name__)

TRANSIENT = (KeystoreUnavailable, AuditUnavailable, OperationalError)
DELIVERY_KEY_TTL_S = 86400
_redis_client = None


def _redis():
    global _redis_client
    if _redis_client is None:
        import redis

        _redis_client = redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_connect_timeout=2,
                                             socket_timeout=2)
    return _redis_client


def deliveries(task) -> int:
    """How many times this message (task id and retry number) has been started; 1 when unknown (run
    eagerly or directly, a broker that is not Redis, Redis unreachable: the task runs, as before)."""
    request = task.request
    if not request.id or request.is_eager or not str(settings.CELERY_BROKER_URL).startswith("redis"):
        return 1
    key = f"cms:deliveries:{task.name}:{request.id}:{request.retries or 0}"
    try:
        with _redis().pipeline() as pipe:
            pipe.incr(key)
            pipe.expire(key, DELIVERY_KEY_TTL_S)
            count, _ = pipe.execute()
    except Exception as exc:  # noqa: BLE001 - a count we cannot keep must not stop the work
        log.warning("task.delivery_count_unavailable", task=task.name, error=type(exc).__name__)
        return 1
    return int(count)


def _dropped(task, document) -> dict | None:
    count = deliveries(task)
    if count <= settings.CMS_JOB_MAX_DELIVERIES:
        return None
    job_id = document.get("job_id") if isinstance(document, dict) else None
    log.error("task.poison_dropped", task=task.name, deliveries=count, job=str(job_id)[:40],
              station=str(document.get("station"))[:50] if isinstance(document, dict) else "")
    return {"status": "dropped", "reason": "poison", "deliveries": count}


@shared_task(bind=True, name="cms.station_report", acks_late=True, reject_on_worker_lost=True,
             ignore_result=True, autoretry_for=TRANSIENT, retry_backoff=1, retry_backoff_max=10,
             retry_jitter=True, max_retries=3)
def station_report(self, report: dict) -> dict:
    dropped = _dropped(self, report)
    if dropped:
        return dropped
    try:
        return jobs.station_report_handle(report)
    except TRANSIENT as exc:
        if self.request.retries < self.max_retries:
            raise  # retried (autoretry_for) with backoff
        # the last try: a presented card is refused in the audit trail, not left as a worker traceback
        return jobs.report_unserved(report, exc)


@shared_task(bind=True, name="cms.job_result", acks_late=True, reject_on_worker_lost=True,
             ignore_result=True, autoretry_for=TRANSIENT, retry_backoff=2, retry_backoff_max=120,
             retry_jitter=True, max_retries=10)
def job_result(self, result: dict) -> dict:
    dropped = _dropped(self, result)
    if dropped:
        return dropped
    outcome = jobs.job_result_handle(result)
    failpoints.hit("result.committed")
    return outcome


# The job after a probe, when Vault (or the database) was down as the probe's result came in: retried every
# 2, 4, 8, then 15 s for an hour, so it is made within seconds of Vault being unsealed (jobs.job_follow_up).
@shared_task(name="cms.job_follow_up", acks_late=True, reject_on_worker_lost=True, ignore_result=True,
             autoretry_for=TRANSIENT, retry_backoff=2, retry_backoff_max=15, retry_jitter=False,
             max_retries=240)
def job_follow_up(job_id: str) -> dict:
    return {"next_job": jobs.job_follow_up(job_id)}


@shared_task(name="cards.expire_jobs", ignore_result=True)
@deferred_while_away("cards.expire_jobs")
def expire_jobs() -> dict:
    """Beat: jobs that can no longer report are failed and their cards flagged for a probe."""
    return jobs.jobs_expire_sweep()
from cards import tasks_alerts  # noqa: E402,F401 - registers the alert and webhook tasks
