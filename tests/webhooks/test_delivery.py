"""MES webhooks against a real local HTTP server and the real OpenBao: the signature verifies with the
secret shown once, 500s are retried with growing backoff, delivery gives up after WEBHOOK_MAX_ATTEMPTS,
and the secret is in no row, log line or audit event."""
from __future__ import annotations

import hashlib
import hmac
import json
import logging

import pytest
from django.conf import settings as django_settings

from audit.models import AuditEvent
from audit.services import record_event
from cards import webhooks
from cards.models import Card, CardProfile, Job, Order, Station
from cards.models.webhooks import WebhookDelivery, WebhookEndpoint
from cards.services.lifecycle import card_suspend
from cards.tasks_alerts import webhook_deliver
from keys import keystore

pytestmark = pytest.mark.django_db


def _verify(secret_hex: str, request: dict) -> bool:
    """What a receiver does (stdlib hmac, independent of the CMS's cryptography-based signer)."""
    headers = request["headers"]
    message = headers["X-CMS-Timestamp"].encode() + b"." + request["body"]
    expected = "sha256=" + hmac.new(bytes.fromhex(secret_hex), message, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, headers["X-CMS-Signature"])


@pytest.fixture
def world(acme, admin):
    profile = CardProfile.objects.create(tenant=acme, name="staff", chip_family="desfire", spec={"schema": 1})
    station = Station.objects.create(tenant=acme, code="acme-line-1", status="approved")
    card = Card.objects.create(tenant=acme, uid="04A1B2C3D4E5F6", chip_type="desfire_ev2", state="active",
                               profile=profile)
    order = Order.objects.create(tenant=acme, profile=profile, station=station, quantity=1,
                                 idempotency_key="mes-order-17", request_fingerprint="0" * 64)
    job = Job.objects.create(tenant=acme, order=order, card=card, station=station, state="succeeded")
    return {"profile": profile, "station": station, "card": card, "order": order, "job": job}


def _finish_order(world):
    """What cards.services.results does when the last card of an order succeeds: state, then the event."""
    order = world["order"]
    Order.objects.filter(pk=order.pk).update(state="completed", cards_done=1)
    record_event(action="job.finished", actor_type="station", actor_name="acme-line-1", tenant=order.tenant,
                 job_id=str(world["job"].pk), card_uid=world["card"].uid,
                 details={"state": "succeeded", "steps_done": 9, "error": {}, "quarantined": False})


def _endpoint(admin, acme, url, events=("order.completed", "job.finished", "card.state_changed")):
    return webhooks.webhook_endpoint_create(actor=admin, tenant=acme, url=url, events=list(events))


def test_the_secret_is_shown_once_and_kept_only_wrapped_in_vault(acme, admin, vault, receiver):
    endpoint, secret = _endpoint(admin, acme, receiver.url)
    assert len(bytes.fromhex(secret)) == 32
    row = repr(list(WebhookEndpoint.objects.filter(pk=endpoint.pk).values()))
    assert secret not in row and "secret" in endpoint.secret_ref  # a reference, not the secret
    ref = keystore.BlobRef.parse(endpoint.secret_ref)
    stored = vault.root_client().secrets.kv.v2.read_secret_version(
        path=ref.path, mount_point=django_settings.VAULT_KV_MOUNT,
        raise_on_deleted_version=True)["data"]["data"][ref.field]
    assert stored.startswith("vault:v1:") and secret not in stored
    created = AuditEvent.objects.get(action="webhook.created")
    assert secret not in json.dumps(created.details)


def test_an_order_completed_is_posted_signed_and_verifies_with_the_secret(acme, admin, world, receiver):
    endpoint, secret = _endpoint(admin, acme, receiver.url)
    _finish_order(world)
    assert webhooks.webhooks_collect()["deliveries"] == 2  # job.finished and order.completed
    assert webhooks.webhooks_collect()["deliveries"] == 0  # the cursor moved: nothing twice
    for delivery in WebhookDelivery.objects.order_by("audit_sequence", "event"):
        assert webhooks.webhook_attempt(delivery_id=str(delivery.pk)).state == "delivered"
    by_event = {r["headers"]["X-CMS-Event"]: r for r in receiver.requests}
    assert set(by_event) == {"order.completed", "job.finished"}
    request = by_event["order.completed"]
    assert _verify(secret, request)
    body = json.loads(request["body"])
    assert body["event"] == "order.completed" and body["tenant"] == "acme"
    assert body["data"]["idempotency_key"] == "mes-order-17" and body["data"]["state"] == "completed"
    assert body["id"] == request["headers"]["X-CMS-Delivery"]
    assert json.loads(by_event["job.finished"]["body"])["data"]["card_uid"] == "04A1B2C3D4E5F6"
    # a tampered body or another secret does not verify
    assert not _verify(secret, {**request, "body": request["body"].replace(b"completed", b"cancelled")})
    assert not _verify("00" * 32, request)
    delivery = WebhookDelivery.objects.get(event="order.completed")
    assert (delivery.state, delivery.attempts, delivery.last_status) == ("delivered", 1, 200)


def test_a_card_state_change_is_sent_from_the_lifecycle_service_event(acme, admin, world, receiver):
    _, secret = _endpoint(admin, acme, receiver.url, events=["card.state_changed"])
    card_suspend(actor=admin, card=world["card"], reason="lost at the gate")
    _finish_order(world)  # not subscribed: no delivery
    webhooks.webhooks_collect()
    delivery = WebhookDelivery.objects.get()
    webhooks.webhook_attempt(delivery_id=str(delivery.pk))
    body = json.loads(receiver.requests[0]["body"])
    assert body["data"] == {"card_uid": "04A1B2C3D4E5F6", "before": "active", "after": "suspended",
                            "reason": "lost at the gate", "action": "card.suspended"}
    assert _verify(secret, receiver.requests[0])


def test_a_500_is_retried_with_growing_backoff_until_it_is_delivered(acme, admin, world, receiver, settings):
    settings.WEBHOOK_BACKOFF_SECONDS, settings.WEBHOOK_BACKOFF_MAX_SECONDS = 10, 3600
    _endpoint(admin, acme, receiver.url, events=["order.completed"])
    _finish_order(world)
    webhooks.webhooks_collect()
    delivery = WebhookDelivery.objects.get()
    receiver.statuses = [500, 503]
    first = webhooks.webhook_attempt(delivery_id=str(delivery.pk))
    second = webhooks.webhook_attempt(delivery_id=str(delivery.pk))
    assert (first.state, first.status, second.status) == ("pending", 500, 503)
    assert 5 <= first.retry_in <= 10 and 10 <= second.retry_in <= 20  # doubled, with jitter
    third = webhooks.webhook_attempt(delivery_id=str(delivery.pk))
    assert third.state == "delivered" and third.retry_in is None
    delivery.refresh_from_db()
    assert (delivery.attempts, delivery.last_status, delivery.state) == (3, 200, "delivered")
    # every attempt carried the same delivery id (receivers dedupe on it)
    assert {r["headers"]["X-CMS-Delivery"] for r in receiver.requests} == {str(delivery.pk)}


def test_it_gives_up_after_max_attempts_and_a_4xx_is_not_retried(acme, admin, world, receiver, settings):
    settings.WEBHOOK_MAX_ATTEMPTS = 3
    _endpoint(admin, acme, receiver.url, events=["order.completed", "job.finished"])
    _finish_order(world)
    webhooks.webhooks_collect()
    failing = WebhookDelivery.objects.get(event="order.completed")
    receiver.statuses = [500, 500, 500, 500]
    outcomes = [webhooks.webhook_attempt(delivery_id=str(failing.pk)) for _ in range(4)]
    assert [o.state for o in outcomes] == ["pending", "pending", "failed", "failed"]
    assert len(receiver.requests) == 3  # the 4th call finds it failed and sends nothing
    failing.refresh_from_db()
    assert (failing.attempts, failing.last_status, failing.last_error) == (3, 500, "HTTP 500")

    refused = WebhookDelivery.objects.get(event="job.finished")
    receiver.statuses = [401]
    assert webhooks.webhook_attempt(delivery_id=str(refused.pk)).state == "failed"


def test_an_unreachable_receiver_is_retried_and_its_error_names_no_url(acme, admin, world, settings):
    _endpoint(admin, acme, "http://127.0.0.1:9/unreachable", events=["order.completed"])
    _finish_order(world)
    webhooks.webhooks_collect()
    delivery = WebhookDelivery.objects.get()
    attempt = webhooks.webhook_attempt(delivery_id=str(delivery.pk))
    delivery.refresh_from_db()
    assert attempt.state == "pending" and attempt.retry_in > 0
    assert delivery.last_error == "ConnectionError" and delivery.last_status is None


def test_the_celery_task_retries_on_500_then_delivers(acme, admin, world, receiver, settings):
    """The task itself (eager: Celery runs its retries in-process, countdown aside)."""
    settings.CELERY_TASK_ALWAYS_EAGER = True
    from cms.celery import app

    app.conf.task_always_eager = True
    try:
        _endpoint(admin, acme, receiver.url, events=["order.completed"])
        _finish_order(world)
        webhooks.webhooks_collect()
        delivery = WebhookDelivery.objects.get()
        receiver.statuses = [500, 502]
        webhook_deliver.apply(args=[str(delivery.pk)])
    finally:
        app.conf.task_always_eager = False
    delivery.refresh_from_db()
    assert (delivery.state, delivery.attempts) == ("delivered", 3)


def test_no_secret_or_signature_reaches_the_logs(acme, admin, world, receiver, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    _, secret = _endpoint(admin, acme, receiver.url, events=["order.completed"])
    _finish_order(world)
    webhooks.webhooks_collect()
    delivery = WebhookDelivery.objects.get()
    receiver.statuses = [500]
    webhooks.webhook_attempt(delivery_id=str(delivery.pk))
    webhooks.webhook_attempt(delivery_id=str(delivery.pk))
    signatures = {r["headers"]["X-CMS-Signature"].removeprefix("sha256=") for r in receiver.requests}
    captured = capsys.readouterr()
    logged = caplog.text + captured.out + captured.err
    assert "webhook.attempt" in logged  # the attempts are logged ...
    for needle in (secret, *signatures):
        assert needle not in logged  # ... without the secret or a signature
    stored = repr(list(WebhookDelivery.objects.values())) + repr(list(AuditEvent.objects.values()))
    for needle in (secret, *signatures):
        assert needle not in stored


def test_deactivating_stops_delivery_and_destroys_the_secret(acme, admin, world, receiver):
    endpoint, _ = _endpoint(admin, acme, receiver.url, events=["order.completed"])
    _finish_order(world)
    webhooks.webhooks_collect()
    delivery = WebhookDelivery.objects.get()
    webhooks.webhook_endpoint_deactivate(actor=admin, endpoint=endpoint)
    assert not keystore.exists(keystore.BlobRef.parse(endpoint.secret_ref))
    assert webhooks.webhook_attempt(delivery_id=str(delivery.pk)).state == "failed"
    assert receiver.requests == []


def test_bad_receiver_input_is_refused_naming_the_field(acme, admin):
    from django.core.exceptions import ValidationError

    for url, events, field in [("ftp://mes.example/x", ["order.completed"], "url"),
                               ("https://user:pw@mes.example/x", ["order.completed"], "url"),
                               ("https://mes.example/x", ["order.shipped"], "events"),
                               ("https://mes.example/x", [], "events")]:
        with pytest.raises(ValidationError) as caught:
            webhooks.webhook_endpoint_create(actor=admin, tenant=acme, url=url, events=events)
        assert field in caught.value.message_dict
    assert not WebhookEndpoint.objects.exists()


def test_an_opened_alert_goes_to_a_receiver_that_asked_for_alerts(acme, admin, receiver, settings):
    from cards import alerts as card_alerts

    settings.ALERT_FAILED_AUTH_THRESHOLD = 2
    _, secret = _endpoint(admin, acme, receiver.url, events=["alert.opened"])
    for _ in range(2):
        record_event(action="card.authenticated", actor_type="station", actor_name="acme-line-1", tenant=acme,
                     result="failure", card_uid="04A1B2C3D4E5F6")
    card_alerts.alerts_run_rules()
    webhooks.webhooks_collect()
    subjects = set()
    for delivery in WebhookDelivery.objects.all():
        assert webhooks.webhook_attempt(delivery_id=str(delivery.pk)).state == "delivered"
    for request in receiver.requests:
        assert _verify(secret, request)
        subjects.add(json.loads(request["body"])["data"]["subject"])
    assert subjects == {"card:04A1B2C3D4E5F6", "station:acme-line-1"}


def test_a_kek_rotation_rewraps_the_secret_and_signing_goes_on(acme, admin, world, receiver):
    from keys import rewrap

    endpoint, secret = _endpoint(admin, acme, receiver.url, events=["order.completed"])
    keystore.rotate_kek(acme.pk)
    report = rewrap.rewrap_tenant(acme.pk)  # raises min_decryption_version: v1 no longer decrypts
    assert report.blobs_rewrapped >= 1 and report.min_decryption_version == 2
    ref = keystore.BlobRef.parse(endpoint.secret_ref)
    assert keystore.read_secret(ref.path)[0][ref.field].startswith("vault:v2:")
    _finish_order(world)
    webhooks.webhooks_collect()
    assert webhooks.webhook_attempt(delivery_id=str(WebhookDelivery.objects.get().pk)).state == "delivered"
    assert _verify(secret, receiver.requests[0])
