"""MES webhooks: where a tenant wants events POSTed, and the log of each delivery."""
from __future__ import annotations

import uuid

from django.db import models


class WebhookEvent(models.TextChoices):
    ORDER_COMPLETED = "order.completed"
    ORDER_FAILED = "order.failed"
    JOB_FINISHED = "job.finished"
    CARD_STATE_CHANGED = "card.state_changed"
    ALERT_OPENED = "alert.opened"


class WebhookEndpoint(models.Model):
    """One receiver of a tenant. The signing secret is in Vault (wrapped under the tenant KEK, so a
    KEK rotation rewraps it too); the database keeps only its keystore reference."""

    tenant = models.ForeignKey("cards.Tenant", on_delete=models.PROTECT, related_name="webhooks")
    url = models.URLField(max_length=500)
    events = models.JSONField(default=list, help_text="the event names this receiver gets")
    is_active = models.BooleanField(default=True)
    secret_ref = models.CharField(max_length=300, help_text="keystore reference of the wrapped secret")
    # The outbox cursor: audit events up to this sequence have been turned into deliveries.
    audit_sequence = models.PositiveBigIntegerField(default=0)
    created_by = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    tenant_path = "tenant"

    class Meta:
        ordering = ["tenant_id", "pk"]

    def __str__(self) -> str:
        return f"webhook {self.pk} -> {self.url}"


class DeliveryState(models.TextChoices):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class WebhookDelivery(models.Model):
    """One event for one receiver: attempts, the last HTTP status and error, the final state."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    event = models.CharField(max_length=32, choices=WebhookEvent.choices)
    dedup_key = models.CharField(max_length=120)
    audit_sequence = models.PositiveBigIntegerField(null=True, blank=True)
    payload = models.JSONField(default=dict)
    state = models.CharField(max_length=16, choices=DeliveryState.choices, default=DeliveryState.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_status = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    tenant_path = "endpoint__tenant"

    class Meta:
        ordering = ["-created_at"]
        constraints = [models.UniqueConstraint(fields=["endpoint", "dedup_key"],
                                               name="one_delivery_per_event")]
        indexes = [models.Index(fields=["state", "next_attempt_at"], name="webhook_delivery_due")]

    def __str__(self) -> str:
        return f"{self.event} to webhook {self.endpoint_id} ({self.state})"
