"""Rotation campaigns and KEK rotations: key changes for many cards that a second admin must approve."""
from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models


class CampaignTarget(models.TextChoices):
    RANDOM = "random", "New random key per card"
    MASTER_VERSION = "master_version", "New master key version (diversified keys)"


class CampaignState(models.TextChoices):
    AWAITING_APPROVAL = "awaiting_approval", "Awaiting a second admin's approval"
    APPROVED = "approved", "Approved, not started"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed", "All pending versions created"
    ROLLED_BACK = "rolled_back", "Rolled back"
    CANCELLED = "cancelled"


class RotationCampaign(models.Model):
    """Rotate the keys in some slot roles of every card of a tenant, in batches.

    Nothing happens until an admin other than the creator approves. Starting creates a pending
    version per slot (one Vault batch per batch of cards); each card takes its new key the next
    time it is presented (the compiler asks `keys.campaigns.versions_owed`).
    """

    tenant = models.ForeignKey("cards.Tenant", on_delete=models.PROTECT, related_name="rotation_campaigns")
    name = models.CharField(max_length=100)
    roles = models.JSONField(help_text="key slot roles to rotate (keys.models.KeyRole values)")
    target = models.CharField(max_length=16, choices=CampaignTarget.choices)
    master_version = models.ForeignKey("keys.MasterKeyVersion", null=True, blank=True,
                                       on_delete=models.PROTECT, related_name="campaigns")
    batch_size = models.PositiveIntegerField(default=100, validators=[MinValueValidator(1),
                                                                       MaxValueValidator(1000)])
    grace_days = models.PositiveSmallIntegerField(default=30, validators=[MaxValueValidator(3650)])
    state = models.CharField(max_length=20, choices=CampaignState.choices,
                             default=CampaignState.AWAITING_APPROVAL)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    approved_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                    related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    approved_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    rolled_back_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=300, blank=True)

    tenant_path = "tenant"

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"campaign {self.pk} {self.name} ({self.state})"

    @property
    def deadline(self):
        """When the grace period ends: cards not rotated by then are overdue."""
        return self.started_at + timedelta(days=self.grace_days) if self.started_at else None


class ItemState(models.TextChoices):
    WAITING = "waiting", "Waiting for its batch"
    PENDING = "pending", "New version created, card not yet rotated"
    ROTATED = "rotated"
    FAILED = "failed"
    CANCELLED = "cancelled", "Rolled back before the card rotated"
    REKEY_BACK = "rekey_back", "Rolled back: the card must be re-keyed to its previous key"
    RESTORED = "restored", "Re-keyed back to its previous version"


class CampaignItem(models.Model):
    """One key slot in a campaign: the version it had when the campaign started and the one it gets."""

    campaign = models.ForeignKey(RotationCampaign, on_delete=models.CASCADE, related_name="items")
    card = models.ForeignKey("cards.Card", on_delete=models.CASCADE, related_name="+")
    slot = models.ForeignKey("keys.KeySlot", on_delete=models.CASCADE, related_name="campaign_items")
    previous_version = models.ForeignKey("keys.KeyVersion", on_delete=models.PROTECT, related_name="+")
    new_version = models.ForeignKey("keys.KeyVersion", null=True, blank=True, on_delete=models.PROTECT,
                                    related_name="campaign_items")
    # After a rollback of a rotated card: a pending version holding the previous key again.
    restore_version = models.ForeignKey("keys.KeyVersion", null=True, blank=True, on_delete=models.PROTECT,
                                        related_name="+")
    state = models.CharField(max_length=16, choices=ItemState.choices, default=ItemState.WAITING)
    batch_no = models.PositiveIntegerField(null=True, blank=True)
    error = models.CharField(max_length=300, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    tenant_path = "campaign__tenant"

    class Meta:
        constraints = [models.UniqueConstraint(fields=["campaign", "slot"], name="one_item_per_slot")]
        indexes = [models.Index(fields=["campaign", "state"]), models.Index(fields=["card", "state"])]
        ordering = ["campaign_id", "card_id", "slot_id"]

    def __str__(self) -> str:
        return f"{self.campaign_id}: slot {self.slot_id} {self.state}"


class KekRotationState(models.TextChoices):
    AWAITING_APPROVAL = "awaiting_approval", "Awaiting a second admin's approval"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class KekRotation(models.Model):
    """A request to rotate a tenant's KEK and rewrap every blob; runs once a second admin approves."""

    tenant = models.ForeignKey("cards.Tenant", on_delete=models.PROTECT, related_name="kek_rotations")
    state = models.CharField(max_length=20, choices=KekRotationState.choices,
                             default=KekRotationState.AWAITING_APPROVAL)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    approved_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                    related_name="+")
    reason = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    approved_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    kek_version = models.PositiveIntegerField(null=True, blank=True)
    blobs_rewrapped = models.PositiveIntegerField(null=True, blank=True)
    error = models.CharField(max_length=300, blank=True)

    tenant_path = "tenant"

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"KEK rotation {self.pk} of {self.tenant_id} ({self.state})"
