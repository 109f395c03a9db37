"""Personalization stations: the reader agents that run jobs beside PC/SC readers."""
from __future__ import annotations

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
