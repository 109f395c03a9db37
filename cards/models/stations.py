"""Personalization stations: the reader agents that run jobs beside PC/SC readers."""
from __future__ import annotations

import uuid

from django.db import models
from django.utils import timezone


class StationStatus(models.TextChoices):
    PENDING = "pending", "Waiting for enrolment"
    ENROLLED = "enrolled", "Enrolled, waiting for approval"
    APPROVED = "approved"
    REVOKED = "revoked"


class Station(models.Model):
    tenant = models.ForeignKey("cards.Tenant", on_delete=models.PROTECT, related_name="stations")
    code = models.SlugField(max_length=50, unique=True,
                            help_text="the station's queue is station.<code>")
    line = models.CharField(max_length=50, blank=True)
    name = models.CharField(max_length=200, blank=True)
    status = models.CharField(max_length=16, choices=StationStatus.choices, default=StationStatus.PENDING)
    # Public halves only; the private halves never leave the station.
    hpke_public_key = models.CharField(max_length=64, blank=True, help_text="X25519, hex")
    sign_public_key = models.CharField(max_length=64, blank=True, help_text="Ed25519, hex")
    enrolment_token_digest = models.CharField(max_length=64, blank=True)
    enrolment_expires_at = models.DateTimeField(null=True, blank=True)
    enrolled_at = models.DateTimeField(null=True, blank=True)
    approved_at = models.DateTimeField(null=True, blank=True)
    approved_by = models.CharField(max_length=150, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    last_ip = models.GenericIPAddressField(null=True, blank=True)
    heartbeat_seconds = models.PositiveIntegerField(default=30)
    # The CMS job-signing key version (Vault Transit) the station pinned at enrolment or acknowledged in
    # a key roll: its jobs are signed with it. Null: not recorded (enrolled before key rolls existed;
    # its jobs are signed with the latest version, which a rotation fills in first).
    cms_signing_key_version = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    tenant_path = "tenant"

    class Meta:
        ordering = ["code"]

    def __str__(self) -> str:
        return self.code

    @property
    def queue(self) -> str:
        return f"station.{self.code}"

    @property
    def online(self) -> bool:
        if self.last_seen_at is None:
            return False
        return (timezone.now() - self.last_seen_at).total_seconds() < 3 * self.heartbeat_seconds


class KeyRollState(models.TextChoices):
    SENT = "sent", "Sent, no answer yet"
    PINNED = "pinned", "Pinned by the station"
    REFUSED = "refused", "Refused by the station"


class StationKeyRoll(models.Model):
    """One key-roll message sent to a station (readeragent.keyroll): its id is what the station
    answers; an answer to a roll that is not SENT any more is a replay."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    station = models.ForeignKey(Station, on_delete=models.CASCADE, related_name="key_rolls")
    signed_with = models.PositiveIntegerField(help_text="the version the station trusted, which signed it")
    new_version = models.PositiveIntegerField()
    retire_below = models.PositiveIntegerField(null=True, blank=True)
    state = models.CharField(max_length=16, choices=KeyRollState.choices, default=KeyRollState.SENT)
    reason = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.CharField(max_length=150, blank=True)
    answered_at = models.DateTimeField(null=True, blank=True)

    tenant_path = "station__tenant"

    class Meta:
        ordering = ["created_at"]

    def __str__(self) -> str:
        return f"roll {self.id} to v{self.new_version} for {self.station_id}"
