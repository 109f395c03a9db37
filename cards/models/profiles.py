"""Card profiles: the declarative description of what a provisioned card holds."""
from __future__ import annotations

from django.db import models

from .cards import ChipType


class ChipFamily(models.TextChoices):
    DESFIRE = "desfire", "MIFARE DESFire"
    JCOP = "jcop", "JCOP 4 (GlobalPlatform)"


class CardProfile(models.Model):
    """A versioned, validated JSON spec (see cards/profiles.py for its schema).

    A profile is never edited in place once a card uses it: a change is a new version,
    so every card records exactly the profile it was provisioned with.
    """

    tenant = models.ForeignKey("cards.Tenant", on_delete=models.PROTECT, related_name="profiles")
    name = models.SlugField(max_length=80)
    version = models.PositiveIntegerField(default=1)
    chip_family = models.CharField(max_length=8, choices=ChipFamily.choices)
    description = models.TextField(blank=True)
    spec = models.JSONField()
    is_active = models.BooleanField(default=True)
    created_by = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    tenant_path = "tenant"

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "name", "version"],
                                               name="unique_profile_version")]
        ordering = ["tenant_id", "name", "-version"]

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"

    def accepts_chip(self, chip_type: str) -> bool:
        return ChipType.family(chip_type) == self.chip_family
