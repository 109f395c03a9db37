"""Celery tasks of the provisioning pipeline, on queue "cms": thin wrappers around cards.services.jobs.

Contract (jobproto.md): the station agent sends `cms.station_report(report)` and
`cms.job_result(result)` with `send_task(name, args=[doc], queue="cms")`. Both are idempotent
(a redelivered report finds its job by presentation key; a redelivered result finds its job
finished and is refused), so they are acked late and retried, with backoff and jitter, only on
the named transient errors: Vault sealed or unreachable, the audit key unavailable, the database
briefly locked. A result is worth more retries than a report: without it the card must be probed.
The return values are small JSON summaries, never keys.
"""
from __future__ import annotations

from celery import shared_task
from django.db import OperationalError

from audit.errors import AuditUnavailable
from cards.services import jobs
from cms.errors import KeystoreUnavailable

TRANSIENT = (KeystoreUnavailable, AuditUnavailable, OperationalError)


@shared_task(name="cms.station_report", acks_late=True, ignore_result=True, autoretry_for=TRANSIENT,
             retry_backoff=1, retry_backoff_max=10, retry_jitter=True, max_retries=3)
def station_report(report: dict) -> dict:
    return jobs.station_report_handle(report)


@shared_task(name="cms.job_result", acks_late=True, ignore_result=True, autoretry_for=TRANSIENT,
             retry_backoff=2, retry_backoff_max=120, retry_jitter=True, max_retries=10)
def job_result(result: dict) -> dict:
    return jobs.job_result_handle(result)


@shared_task(name="cards.expire_jobs", ignore_result=True, autoretry_for=TRANSIENT, retry_backoff=5,
             max_retries=3)
def expire_jobs() -> dict:
    """Beat: jobs that can no longer report are failed and their cards flagged for a probe."""
    return jobs.jobs_expire_sweep()
from cards import tasks_alerts  # noqa: E402,F401 - registers the alert and webhook tasks
