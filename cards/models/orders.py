"""MES orders and the jobs they become, one per card presented at a station."""
from __future__ import annotations

import uuid

from django.db import models


class OrderState(models.TextChoices):
    OPEN = "open"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Order(models.Model):
    tenant = models.ForeignKey("cards.Tenant", on_delete=models.PROTECT, related_name="orders")
    profile = models.ForeignKey("cards.CardProfile", on_delete=models.PROTECT, related_name="orders")
    station = models.ForeignKey("cards.Station", null=True, blank=True, on_delete=models.PROTECT,
                                related_name="orders")
    line = models.CharField(max_length=50, blank=True)
    quantity = models.PositiveIntegerField(null=True, blank=True)
    uids = models.JSONField(default=list, blank=True)
    idempotency_key = models.CharField(max_length=100)
    # SHA-256 of the canonical request body: the same key with another body is a conflict.
    request_fingerprint = models.CharField(max_length=64)
    state = models.CharField(max_length=16, choices=OrderState.choices, default=OrderState.OPEN)
    # distinct cards with a job under this order that is not refused or cancelled: what the order has taken
    # of its quantity (kept by cards.services.claims as jobs are claimed, refused, or take a late result;
    # a count of the jobs instead grew with the order and was read twice for each card presented)
    cards_claimed = models.PositiveIntegerField(default=0)
    cards_done = models.PositiveIntegerField(default=0)
    cards_failed = models.PositiveIntegerField(default=0)
    created_by = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    tenant_path = "tenant"

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "idempotency_key"],
                                               name="unique_order_idempotency_key")]
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"order {self.pk} ({self.state})"


class JobState(models.TextChoices):
    CREATED = "created"
    DISPATCHED = "dispatched"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    REFUSED = "refused"
    CANCELLED = "cancelled"


JOB_TRANSITIONS: dict[str, set[str]] = {
    JobState.CREATED: {JobState.DISPATCHED, JobState.CANCELLED, JobState.FAILED},
    JobState.DISPATCHED: {JobState.RUNNING, JobState.SUCCEEDED, JobState.FAILED, JobState.INTERRUPTED,
                          JobState.REFUSED, JobState.CANCELLED},
    JobState.RUNNING: {JobState.SUCCEEDED, JobState.FAILED, JobState.INTERRUPTED, JobState.REFUSED},
    JobState.INTERRUPTED: set(),
    JobState.SUCCEEDED: set(),
    JobState.FAILED: set(),
    JobState.REFUSED: set(),
    JobState.CANCELLED: set(),
}


class InvalidTransition(Exception):
    pass


class Job(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey("cards.Tenant", on_delete=models.PROTECT, related_name="jobs")
    order = models.ForeignKey(Order, null=True, blank=True, on_delete=models.PROTECT, related_name="jobs")
    card = models.ForeignKey("cards.Card", on_delete=models.PROTECT, related_name="jobs")
    station = models.ForeignKey("cards.Station", on_delete=models.PROTECT, related_name="jobs")
    # The job this one resumes after an interruption, if any.
    resumes = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    state = models.CharField(max_length=16, choices=JobState.choices, default=JobState.CREATED)
    script_version = models.PositiveSmallIntegerField(default=1)
    script = models.JSONField(default=dict, blank=True, help_text="typed steps; keys by reference only")
    script_digest = models.CharField(max_length=64, blank=True)
    stage_reached = models.CharField(max_length=64, blank=True)
    steps_done = models.PositiveIntegerField(default=0)
    result = models.JSONField(default=dict, blank=True)
    error = models.JSONField(default=dict, blank=True)
    trace = models.JSONField(default=list, blank=True, help_text="redacted APDU trace")
    deliveries = models.PositiveSmallIntegerField(default=0)
    # Idempotency key of the card presentation (or follow-up) that made this job: a redelivered
    # report finds its job instead of making a second one.
    presentation_key = models.CharField(max_length=64, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    dispatched_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    tenant_path = "tenant"

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["station", "state"]), models.Index(fields=["card", "state"])]
        constraints = [models.UniqueConstraint(fields=["presentation_key"],
                                               condition=~models.Q(presentation_key=""),
                                               name="unique_job_presentation_key")]

    def __str__(self) -> str:
        return f"job {self.id} ({self.state})"

    def can_move_to(self, state: str) -> bool:
        return state in JOB_TRANSITIONS[self.state]

    def move_to(self, state: str) -> None:
        if not self.can_move_to(state):
            raise InvalidTransition(f"job {self.id}: {self.state} -> {state} is not allowed")
        self.state = state

    def refused_unrun(self) -> bool:
        """The station refused this job as expired before any step: no copy of it ran there, unless
        an earlier copy did and its result is still on its way (see `take_late_result`)."""
        return self.state == JobState.REFUSED and not self.steps_done \
            and (self.error or {}).get("reason") == "expired"

    def expired_no_result(self) -> bool:
        """The expiry sweep failed this job NoResult because no result had been applied in time; the result
        may still come (it arrived while Vault, the audit key or the database was down, and was retried)."""
        return self.state == JobState.FAILED and (self.error or {}).get("kind") == "NoResult"

    def take_late_result(self, state: str) -> None:
        """The one way out of a finished state: a job refused as expired whose earlier copy did run on
        the card takes that copy's result (a station that checked the expiry before its replay ledger,
        or a result that raced the refusal between two CMS workers); a job the sweep expired NoResult
        takes its own result that came late. The caller holds the row lock."""
        if not (self.refused_unrun() or self.expired_no_result()) \
                or state not in (JobState.SUCCEEDED, JobState.FAILED, JobState.INTERRUPTED):
            raise InvalidTransition(f"job {self.id}: {self.state} -> {state} is not a late result")
        self.state = state
