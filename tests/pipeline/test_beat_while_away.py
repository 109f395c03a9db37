"""Beat's periodic tasks while a backing service is away (cms/periodic.py): a run that finds Vault sealed
(real OpenBao) or the database gone does nothing, says so in one `task.deferred` warning and returns
{"deferred": <error class>} instead of raising (a worker traceback every period, and Celery retries piling
up behind beat's own next run); once the service is back the next run does the work."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.db import OperationalError
from django.utils import timezone
from structlog.testing import capture_logs

from audit import chainkey
from cards import tasks, tasks_alerts
from cards.models import Job
from keys import tasks as key_tasks

from .conftest import DESFIRE_UID

pytestmark = [pytest.mark.vault, pytest.mark.django_db]

# every beat entry's task, and where its work is done (patched below to fail as if the service were away)
BEAT = {
    "cards.expire_jobs": (tasks.expire_jobs, "cards.services.jobs.jobs_expire_sweep"),
    "alerts.run_rules": (tasks_alerts.run_alert_rules, "cards.alerts.alerts_run_rules"),
    "alerts.audit_chain": (tasks_alerts.check_audit_chain, "cards.alerts.alerts_check_audit_chain"),
    "webhooks.collect": (tasks_alerts.collect_webhooks, "cards.webhooks.webhooks_collect"),
    "keys.grace_sweep": (key_tasks.grace_sweep, "keys.campaigns.grace_sweep"),
    "keys.pool_sweep": (key_tasks.pool_sweep, "keys.pool.sweep"),
}


def test_every_beat_task_is_listed_here():
    assert {entry["task"] for entry in django_settings.CELERY_BEAT_SCHEDULE.values()} == set(BEAT)


@pytest.mark.parametrize("name", sorted(BEAT))
def test_a_beat_task_with_the_database_gone_is_deferred(name, monkeypatch):
    task, service = BEAT[name]

    def gone(*args, **kwargs):
        raise OperationalError("connection to server at 127.0.0.1 failed: Connection refused")

    monkeypatch.setattr(service, gone)
    with capture_logs() as logs:
        assert task.run() == {"deferred": "OperationalError"}
    assert [e["task"] for e in logs if e["event"] == "task.deferred"] == [name]


def test_the_expiry_sweep_with_vault_sealed_waits_and_runs_after_unseal(vault, cms, station, desfire_profile,
                                                                        order_for, sent):
    order_for(desfire_profile)
    cms.report(station.report("card_presented", uid=DESFIRE_UID))
    job_id = cms.last_envelope()["job_id"]
    Job.objects.filter(pk=job_id).update(created_at=timezone.now() - timedelta(hours=1))
    chainkey.forget_chain_key()  # a worker process that has not read the audit chain key yet
    vault.seal()
    try:
        with capture_logs() as logs:
            assert tasks.expire_jobs.run() == {"deferred": "AuditUnavailable"}
        assert any(e["event"] == "task.deferred" and e["task"] == "cards.expire_jobs" for e in logs)
        assert Job.objects.get(pk=job_id).state == "dispatched"  # nothing half-done
    finally:
        vault.unseal()
    assert tasks.expire_jobs.run() == {"cards": 1, "expired": 1}
    assert Job.objects.get(pk=job_id).error["kind"] == "NoResult"
