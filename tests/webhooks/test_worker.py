"""The delivery task on a real Celery worker over the real Redis: a 500, a retry after the backoff, then 200.

The worker consumes a queue of its own, so no other worker on this Redis takes the task.
"""
from __future__ import annotations

import time
import uuid

import pytest

from cards import webhooks
from cards.models import Card, CardProfile, Job, Order, Station
from cards.models.webhooks import WebhookDelivery
from cards.tasks_alerts import webhook_deliver
from tests.webhooks.test_delivery import _finish_order, _verify


@pytest.fixture
def world(transactional_db, acme, admin):
    profile = CardProfile.objects.create(tenant=acme, name="staff", chip_family="desfire", spec={"schema": 1})
    station = Station.objects.create(tenant=acme, code="acme-line-1", status="approved")
    card = Card.objects.create(tenant=acme, uid="04A1B2C3D4E5F6", chip_type="desfire_ev2", state="active",
                               profile=profile)
    order = Order.objects.create(tenant=acme, profile=profile, station=station, quantity=1,
                                 idempotency_key="mes-order-17", request_fingerprint="0" * 64)
    job = Job.objects.create(tenant=acme, order=order, card=card, station=station, state="succeeded")
    return {"order": order, "job": job, "card": card}


def test_a_real_worker_retries_a_500_with_backoff_and_delivers(world, acme, admin, receiver, settings):
    from celery.contrib.testing.worker import start_worker

    from cms.celery import app

    settings.WEBHOOK_BACKOFF_SECONDS = 1
    queue = f"test-webhooks-{uuid.uuid4().hex[:8]}"
    _, secret = webhooks.webhook_endpoint_create(actor=admin, tenant=acme, url=receiver.url,
                                                 events=["order.completed"])
    _finish_order(world)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(webhooks, "_enqueue", lambda pk, countdown=0: None)  # we send it to our queue below
        webhooks.webhooks_collect()
    delivery = WebhookDelivery.objects.get()
    receiver.statuses = [500]
    with start_worker(app, pool="solo", concurrency=1, perform_ping_check=False, queues=[queue],
                      loglevel="WARNING", shutdown_timeout=10):
        webhook_deliver.apply_async(args=[str(delivery.pk)], queue=queue)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            delivery.refresh_from_db()
            if delivery.state != "pending":
                break
            time.sleep(0.2)
    assert (delivery.state, delivery.attempts, delivery.last_status) == ("delivered", 2, 200)
    first, second = (r["at"] for r in receiver.requests)
    assert second - first >= 0.5  # the retry waited its backoff (1 s, jitter down to half)
    assert all(_verify(secret, r) for r in receiver.requests)
