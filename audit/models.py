"""The audit log: append-only, hash-chained events and the one-row head that serialises appends."""
from __future__ import annotations

from django.db import models

GENESIS_HASH = "0" * 64


class AppendOnlyError(Exception):
    """Someone tried to change or remove an audit event through the ORM."""


class AuditEventQuerySet(models.QuerySet):
    # The database refuses these too (triggers); failing here first gives a clear Python error.
    def update(self, **kwargs):
        raise AppendOnlyError("audit events are append-only: update refused")

    def delete(self):
        raise AppendOnlyError("audit events are append-only: delete refused")


class ActorType(models.TextChoices):
    USER = "user", "User"
    SERVICE = "service", "Service account"
    STATION = "station", "Station"
    SYSTEM = "system", "System"
    ANONYMOUS = "anonymous", "Anonymous"


class AuditEvent(models.Model):
    """One thing that happened, shaped like NetBox's ObjectChange plus the card-world fields.

    Nothing here is a foreign key: the actor and the tenant are copied as plain values so an
    event outlives them and no cascade can ever try to rewrite or delete it.
    """

    sequence = models.PositiveBigIntegerField(unique=True, editable=False)
    created_at = models.DateTimeField(db_index=True, editable=False)
    actor_type = models.CharField(max_length=16, choices=ActorType.choices)
    actor_id = models.CharField(max_length=64, blank=True)
    actor_name = models.CharField(max_length=150, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    job_id = models.CharField(max_length=64, blank=True)
    tenant_id = models.BigIntegerField(null=True, blank=True)
    tenant_slug = models.CharField(max_length=50, blank=True)
    action = models.CharField(max_length=64)
    result = models.CharField(max_length=32, default="success")
    card_uid = models.CharField(max_length=32, blank=True)
    aid = models.CharField(max_length=32, blank=True)
    key_no = models.IntegerField(null=True, blank=True)
    key_version = models.IntegerField(null=True, blank=True)
    details = models.JSONField(default=dict, blank=True)
    prev_hash = models.CharField(max_length=64, editable=False)
    hash = models.CharField(max_length=64, editable=False)

    objects = AuditEventQuerySet.as_manager()
    # cms.scoping.restrict filters on this; events without a tenant are for superusers only.
    tenant_path = "tenant_id"

    class Meta:
        ordering = ["-sequence"]
        # Plain B-tree indexes for the exact-match filters (audit.selectors, alerts, faults tests): no
        # db_index=True, which on PostgreSQL adds a second varchar_pattern_ops ("_like") index per column
        # that only LIKE 'x%' could use and nothing here runs. No index on tenant_id alone
        # (audit_tenant_seq leads with it) nor on result (two values, always filtered with action). Each
        # event is inserted with its indexes in the provisioning path: 17 -> 9 (bench/cms_pipeline.py).
        indexes = [models.Index(fields=["tenant_id", "-sequence"], name="audit_tenant_seq"),
                   models.Index(fields=["action"], name="audit_action"),
                   models.Index(fields=["job_id"], name="audit_job_id"),
                   models.Index(fields=["request_id"], name="audit_request_id"),
                   models.Index(fields=["card_uid"], name="audit_card_uid"),
                   models.Index(fields=["aid"], name="audit_aid")]

    def __str__(self) -> str:
        return f"#{self.sequence} {self.action} {self.result}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise AppendOnlyError("audit events are append-only: update refused")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AppendOnlyError("audit events are append-only: delete refused")


class ChainHead(models.Model):
    """The last appended (sequence, hash). Every append updates this one row first, so writers
    queue on its row lock (PostgreSQL) or on the database write lock (SQLite) and never fork."""

    sequence = models.PositiveBigIntegerField(default=0)
    hash = models.CharField(max_length=64, default=GENESIS_HASH)

    HEAD_ID = 1

    def __str__(self) -> str:
        return f"head #{self.sequence}"


class AlertState(models.TextChoices):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    CLOSED = "closed"


class Alert(models.Model):
    """A suspicious pattern that a beat rule found (seed 003, "Auditing & Monitoring"), deduplicated:
    while an alert for the same (tenant, rule, subject) is open or acknowledged, the rule updates it
    (count, last_seen_at) instead of opening another. Kept, like events, without foreign keys."""

    tenant_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    tenant_slug = models.CharField(max_length=50, blank=True)
    rule = models.CharField(max_length=32, db_index=True)
    subject = models.CharField(max_length=200,
                               help_text="what the rule is about: card:<uid>, station:<code>, ...")
    state = models.CharField(max_length=16, choices=AlertState.choices, default=AlertState.OPEN,
                             db_index=True)
    message = models.CharField(max_length=300)
    details = models.JSONField(default=dict, blank=True)
    count = models.PositiveIntegerField(default=1, help_text="occurrences seen since first_seen_at")
    first_seen_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.CharField(max_length=150, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)

    tenant_path = "tenant_id"

    class Meta:
        ordering = ["-last_seen_at", "-pk"]
        indexes = [models.Index(fields=["tenant_id", "rule", "subject", "state"], name="alert_dedup")]
        constraints = [models.UniqueConstraint(
            fields=["tenant_id", "rule", "subject"], condition=~models.Q(state="closed"),
            name="one_live_alert_per_rule_subject")]

    def __str__(self) -> str:
        return f"{self.rule} {self.subject} ({self.state})"
