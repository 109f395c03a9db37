"""Celery tasks for alerts and MES webhooks: thin wrappers that take ids and call one service each.

Registered through cards/tasks.py (autodiscovery imports only `<app>.tasks`).
"""
from __future__ import annotations

from celery import shared_task
from django.db import OperationalError

from audit.errors import AuditUnavailable
from cards import alerts, webhooks
from cms.errors import KeystoreUnavailable
from cms.periodic import deferred_while_away

TRANSIENT = (KeystoreUnavailable, AuditUnavailable, OperationalError)


@shared_task(name="alerts.run_rules", time_limit=120, soft_time_limit=100)
@deferred_while_away("alerts.run_rules")
def run_alert_rules() -> dict:
    """Beat: failed authentications, unwrap rate, station IP and heartbeat."""
    return alerts.alerts_run_rules()


@shared_task(name="alerts.audit_chain", time_limit=1800, soft_time_limit=1750)
@deferred_while_away("alerts.audit_chain")
def check_audit_chain() -> dict:
    """Beat: walk the audit chain; a break is an alert in every tenant."""
    return alerts.alerts_check_audit_chain()


@shared_task(name="webhooks.collect", time_limit=120, soft_time_limit=100)
@deferred_while_away("webhooks.collect")
def collect_webhooks() -> dict:
    """Beat: audit events -> webhook deliveries (each then sent by webhooks.deliver)."""
    return webhooks.webhooks_collect()


@shared_task(name="webhooks.deliver", bind=True, max_retries=None, ignore_result=True, time_limit=60,
             soft_time_limit=50, autoretry_for=TRANSIENT, retry_backoff=5, retry_backoff_max=300,
             retry_jitter=True)
def webhook_deliver(self, delivery_id: str) -> None:
    """One POST; the delivery row counts attempts, so the retry limit is WEBHOOK_MAX_ATTEMPTS, not Celery's.
    Vault or the database being away is no attempt: Celery retries those on its own backoff."""
    attempt = webhooks.webhook_attempt(delivery_id=delivery_id)
    if attempt.retry_in is not None:
        raise self.retry(countdown=attempt.retry_in)
