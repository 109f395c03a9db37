"""MES webhooks: receivers per tenant, the audit-log outbox that makes deliveries, signed POSTs with backoff.

Where events come from: the audit chain. Every change a webhook reports (a job's result, an order
completed, a card's state, an alert opened) already writes an audit event in the transaction that
makes it, so `webhooks_collect` (beat, every WEBHOOK_COLLECT_SECONDS) reads each receiver's tenant's
events after its cursor and turns them into `WebhookDelivery` rows, cursor and rows in one
transaction: nothing is sent for a change that rolled back, and nothing is lost if a worker dies.
No provisioning code has to call us.

What a receiver gets: `POST <url>` with a JSON body `{"id", "event", "created_at", "tenant", "data"}`
and the headers `X-CMS-Event`, `X-CMS-Delivery` (the delivery id, the same on every retry: dedupe
on it), `X-CMS-Timestamp` (unix seconds) and
`X-CMS-Signature: sha256=<hex HMAC-SHA256(key=bytes.fromhex(secret), msg=timestamp + "." + body)>`.

The secret: 32 random bytes, shown once (hex) when the receiver is created, stored only wrapped
under the tenant's Transit KEK in Vault KV (keys.keystore; the row keeps the reference, never the
secret nor a digest of it) and unwrapped into a wiped bytearray for each signature.
"""
from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

import requests
import structlog
from cryptography.hazmat.primitives import hashes, hmac
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Max, QuerySet
from django.utils import timezone

from audit.models import AuditEvent
from cards.models import Job, Tenant
from cards.models.orders import OrderState
from cards.models.webhooks import DeliveryState, WebhookDelivery, WebhookEndpoint, WebhookEvent
from cards.services.audit_log import record
from cms.scoping import actor_name, ensure_allowed, ensure_tenant, restrict
from keys import keystore
from keys.services import tenant_kek_ensure

log = structlog.get_logger(__name__)

SECRET_BYTES = 32
SIGNATURE_HEADER = "X-CMS-Signature"
COLLECT_BATCH = 500
# Card lifecycle events and the state each one leaves the card in.
CARD_STATE_ACTIONS = {"card.suspended": "suspended", "card.resumed": "active", "card.revoked": "revoked",
                      "card.released": "provisioning", "card.quarantined": "quarantined"}
SOURCE_ACTIONS = ("job.finished", "alert.opened", *CARD_STATE_ACTIONS)
RETRY_STATUSES = {408, 425, 429}


def secret_ref(endpoint: WebhookEndpoint) -> keystore.BlobRef:
    return keystore.BlobRef(f"{keystore.tenant_root(endpoint.tenant_id)}/webhooks/{endpoint.pk}", "secret")


def _check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError({"url": ["must be an http or https URL with a host"]})
    if parts.username or parts.password:
        raise ValidationError({"url": ["must not carry credentials: the signature authenticates us"]})


def _check_events(events: list[str]) -> list[str]:
    if not events:
        raise ValidationError({"events": ["name at least one event"]})
    unknown = sorted(set(events) - set(WebhookEvent.values))
    if unknown:
        raise ValidationError({"events": [f"unknown: {', '.join(unknown)}; known: "
                                          f"{', '.join(WebhookEvent.values)}"]})
    return sorted(set(events))


def webhook_endpoint_create(*, actor, tenant: Tenant, url: str,
                            events: list[str]) -> tuple[WebhookEndpoint, str]:
    """Create a receiver; returns it and its secret (hex), which is never shown again.

    Vault first, then the row: the secret is wrapped and stored before the transaction commits, and
    a failed commit leaves at most an orphan blob that no row names.
    """
    ensure_tenant(tenant.pk, actor, "manage")
    _check_url(url)
    events = _check_events(list(events))
    with transaction.atomic():
        tenant_kek_ensure(tenant=tenant, actor=actor)  # audited when it creates the KEK
        cursor = AuditEvent.objects.aggregate(top=Max("sequence"))["top"] or 0
        endpoint = WebhookEndpoint.objects.create(tenant=tenant, url=url, events=events,
                                                  audit_sequence=cursor, created_by=actor_name(actor))
        ref = secret_ref(endpoint)
        endpoint.secret_ref = str(ref)
        endpoint.save(update_fields=["secret_ref"])
        # Any blob already at this path is an orphan of a creation that rolled back (the row id was
        # free again): this new row, holding the id, is the only one that can name the path.
        with keystore.generate(tenant.pk, [ref], length=SECRET_BYTES, replace=True) as keys:
            secret_hex = keys[ref].hex()
        record("webhook.created", actor=actor, tenant=tenant,
               details={"webhook": endpoint.pk, "url": url, "events": events, "secret_ref": str(ref)})
    return endpoint, secret_hex


@transaction.atomic
def webhook_endpoint_deactivate(*, actor, endpoint: WebhookEndpoint) -> WebhookEndpoint:
    """Stop sending (pending deliveries fail at their next attempt) and destroy the secret in Vault."""
    ensure_allowed(endpoint, actor, "manage")
    endpoint = WebhookEndpoint.objects.select_for_update().select_related("tenant").get(pk=endpoint.pk)
    if not endpoint.is_active:
        raise ValidationError({"state": ["the webhook is already deactivated"]})
    endpoint.is_active = False
    endpoint.save(update_fields=["is_active"])
    record("webhook.deactivated", actor=actor, tenant=endpoint.tenant, details={"webhook": endpoint.pk})
    keystore.remove(endpoint.tenant_id, [keystore.BlobRef.parse(endpoint.secret_ref)])
    return endpoint


def webhook_endpoint_list(*, actor) -> QuerySet[WebhookEndpoint]:
    return restrict(WebhookEndpoint.objects.select_related("tenant"), actor, "manage")


def webhook_delivery_list(*, actor) -> QuerySet[WebhookDelivery]:
    return restrict(WebhookDelivery.objects.select_related("endpoint"), actor, "manage")


# --- the outbox: audit events -> deliveries -----------------------------------------------------

def _job_payload(event: AuditEvent, job: Job | None) -> dict:
    details = event.details if isinstance(event.details, dict) else {}
    error = details.get("error") if isinstance(details.get("error"), dict) else {}
    return {"job": event.job_id, "card_uid": event.card_uid, "state": details.get("state", ""),
            "station": event.actor_name, "order": job.order_id if job else None,
            "quarantined": bool(details.get("quarantined")),
            "error": {k: error[k] for k in ("kind", "step", "op", "sw", "meaning") if k in error}}


def _order_payload(order) -> dict:
    return {"order": order.pk, "idempotency_key": order.idempotency_key, "state": order.state,
            "quantity": order.quantity, "cards_done": order.cards_done, "cards_failed": order.cards_failed,
            "profile": order.profile_id, "line": order.line}


def translate(event: AuditEvent) -> list[tuple[str, str, dict]]:
    """(webhook event, dedup key, data) for one audit event; data never holds keys or references."""
    details = event.details if isinstance(event.details, dict) else {}
    if event.action == "job.finished":
        job = Job.objects.select_related("order").filter(pk=event.job_id).first() if event.job_id else None
        out = [(WebhookEvent.JOB_FINISHED, f"job.finished:{event.job_id}", _job_payload(event, job))]
        order = job.order if job else None
        if order is not None and order.state in (OrderState.COMPLETED, OrderState.FAILED):
            name = (WebhookEvent.ORDER_COMPLETED if order.state == OrderState.COMPLETED
                    else WebhookEvent.ORDER_FAILED)
            out.append((name, f"{name}:{order.pk}", _order_payload(order)))
        return out
    if event.action in CARD_STATE_ACTIONS:
        after = details.get("after") or details.get("state") or CARD_STATE_ACTIONS[event.action]
        return [(WebhookEvent.CARD_STATE_CHANGED, f"audit:{event.sequence}",
                 {"card_uid": event.card_uid, "before": details.get("before", ""), "after": after,
                  "reason": str(details.get("reason", ""))[:200], "action": event.action})]
    if event.action == "alert.opened":
        return [(WebhookEvent.ALERT_OPENED, f"alert.opened:{details.get('alert')}",
                 {"alert": details.get("alert"), "rule": details.get("rule", ""),
                  "subject": details.get("subject", ""), "message": details.get("message", "")})]
    return []


def _collect_one(endpoint_pk: int) -> list[str]:
    with transaction.atomic():
        endpoint = WebhookEndpoint.objects.select_for_update().get(pk=endpoint_pk)
        if not endpoint.is_active:
            return []
        events = list(AuditEvent.objects.filter(tenant_id=endpoint.tenant_id,
                                                sequence__gt=endpoint.audit_sequence,
                                                action__in=SOURCE_ACTIONS).order_by("sequence")[:COLLECT_BATCH])
        created = []
        for event in events:
            for name, dedup_key, data in translate(event):
                if name not in endpoint.events:
                    continue
                delivery, new = WebhookDelivery.objects.get_or_create(
                    endpoint=endpoint, dedup_key=dedup_key[:120],
                    defaults={"event": name, "payload": data, "audit_sequence": event.sequence,
                              "next_attempt_at": timezone.now()})
                if new:
                    created.append(str(delivery.pk))
        if events:
            endpoint.audit_sequence = events[-1].sequence
            endpoint.save(update_fields=["audit_sequence"])
        transaction.on_commit(lambda: [_enqueue(pk) for pk in created])
    return created


def _enqueue(delivery_id: str, countdown: float = 0) -> None:
    from cards.tasks_alerts import webhook_deliver

    webhook_deliver.apply_async(args=[delivery_id], countdown=countdown)


def webhooks_collect() -> dict:
    """Beat: new audit events of each active receiver's tenant become deliveries (and delivery tasks)."""
    created = []
    for pk in WebhookEndpoint.objects.filter(is_active=True).values_list("pk", flat=True):
        created += _collect_one(pk)
    return {"deliveries": len(created), "requeued": webhooks_requeue_due()}


# --- one attempt -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Attempt:
    state: str
    status: int | None = None
    retry_in: float | None = None


def body_of(delivery: WebhookDelivery) -> bytes:
    document = {"id": str(delivery.pk), "event": delivery.event,
                "created_at": delivery.created_at.isoformat(), "tenant": delivery.endpoint.tenant.slug,
                "data": delivery.payload}
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def sign(key: bytearray, timestamp: int, body: bytes) -> str:
    """`sha256=<hex>` of HMAC-SHA256(key, "<timestamp>." + body) (cryptography's HMAC)."""
    mac = hmac.HMAC(bytes(key), hashes.SHA256())
    mac.update(f"{timestamp}.".encode() + body)
    return "sha256=" + mac.finalize().hex()


def backoff_seconds(attempts: int) -> float:
    """Exponential, WEBHOOK_BACKOFF_SECONDS doubled per attempt, capped, with jitter (half to full)."""
    delay = min(settings.WEBHOOK_BACKOFF_MAX_SECONDS,
                settings.WEBHOOK_BACKOFF_SECONDS * 2 ** max(0, attempts - 1))
    return delay * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not a secret


def _finish(delivery_id, *, status: int | None, error: str, delivered: bool, retryable: bool) -> Attempt:
    now = timezone.now()
    with transaction.atomic():
        delivery = WebhookDelivery.objects.select_for_update().get(pk=delivery_id)
        delivery.attempts += 1
        delivery.last_status, delivery.last_error, delivery.last_attempt_at = status, error[:200], now
        retry_in = None
        if delivered:
            delivery.state, delivery.delivered_at = DeliveryState.DELIVERED, now
            delivery.next_attempt_at = None
        elif retryable and delivery.attempts < settings.WEBHOOK_MAX_ATTEMPTS:
            retry_in = backoff_seconds(delivery.attempts)
            delivery.next_attempt_at = now + timedelta(seconds=retry_in)
        else:
            delivery.state, delivery.next_attempt_at = DeliveryState.FAILED, None
        delivery.save()
    log.info("webhook.attempt", delivery=str(delivery_id), webhook_event=delivery.event,
             endpoint=delivery.endpoint_id, attempt=delivery.attempts, status=status, error=error[:200],
             state=delivery.state, retry_in=retry_in)
    return Attempt(delivery.state, status, retry_in)


def webhook_attempt(*, delivery_id: str) -> Attempt:
    """POST one delivery once. Retries (by the caller, after `retry_in` s) on a connection error,
    a timeout, 5xx, 408, 425 or 429; any other answer but 2xx fails it at once; so does the
    WEBHOOK_MAX_ATTEMPTS-th failure. Nothing of the secret or signature is logged or stored."""
    delivery = (WebhookDelivery.objects.select_related("endpoint__tenant").filter(pk=delivery_id).first())
    if delivery is None or delivery.state != DeliveryState.PENDING:
        return Attempt(delivery.state if delivery else "missing")
    endpoint = delivery.endpoint
    if not endpoint.is_active:
        return _finish(delivery.pk, status=None, error="the webhook was deactivated", delivered=False,
                       retryable=False)
    body = body_of(delivery)
    timestamp = int(time.time())
    ref = keystore.BlobRef.parse(endpoint.secret_ref)
    with keystore.unwrap(endpoint.tenant_id, [ref]) as keys:
        signature = sign(keys[ref], timestamp, body)
    headers = {"Content-Type": "application/json", "User-Agent": "cms-webhooks/1",
               "X-CMS-Event": delivery.event, "X-CMS-Delivery": str(delivery.pk),
               "X-CMS-Timestamp": str(timestamp), SIGNATURE_HEADER: signature}
    try:
        response = requests.post(endpoint.url, data=body, headers=headers, allow_redirects=False,
                                 timeout=settings.WEBHOOK_TIMEOUT_SECONDS)
    except requests.RequestException as exc:
        # the exception text may hold the URL; the type is enough to act on
        return _finish(delivery.pk, status=None, error=type(exc).__name__, delivered=False,
                       retryable=True)
    status = response.status_code
    response.close()
    if 200 <= status < 300:
        return _finish(delivery.pk, status=status, error="", delivered=True, retryable=False)
    retryable = status >= 500 or status in RETRY_STATUSES
    return _finish(delivery.pk, status=status, error=f"HTTP {status}", delivered=False, retryable=retryable)


def webhooks_requeue_due(*, older_than_seconds: int = 300) -> int:
    """Pending deliveries whose retry is long overdue (a worker died holding it) go back on the queue."""
    due = timezone.now() - timedelta(seconds=older_than_seconds)
    overdue = WebhookDelivery.objects.filter(state=DeliveryState.PENDING, next_attempt_at__lt=due)
    ids = [str(pk) for pk in overdue.values_list("pk", flat=True)[:COLLECT_BATCH]]
    for pk in ids:
        _enqueue(pk)
    return len(ids)
