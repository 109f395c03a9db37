"""Celery tasks of the provisioning pipeline, on queue "cms": thin wrappers around cards.services.jobs.

Contract (jobproto.md): the station agent sends `cms.station_report(report)` and
`cms.job_result(result)` with `send_task(name, args=[doc], queue="cms")`. Both are idempotent
(a redelivered report finds its job by presentation key; a redelivered result finds its job
finished and is refused), so they are acked late. They never retry on their own: a failure is
logged and the station's next report or the job's expiry decides what happens next. The return
values are small JSON summaries, never keys.
"""
from __future__ import annotations

from celery import shared_task

from cards.services import jobs


@shared_task(name="cms.station_report", acks_late=True, ignore_result=True)
def station_report(report: dict) -> dict:
    return jobs.station_report_handle(report)


@shared_task(name="cms.job_result", acks_late=True, ignore_result=True)
def job_result(result: dict) -> dict:
    return jobs.job_result_handle(result)
