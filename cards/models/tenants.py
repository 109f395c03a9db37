"""Tenants and the AID namespaces each one owns."""
from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from cards.validators import validate_gp_aid


class Tenant(models.Model):
    """An issuer whose cards, applications and keys are kept apart from every other tenant's.

    A tenant owns a GlobalPlatform AID prefix (Fidesmo-style: every AID it installs starts
    with it) and a range of 3-byte DESFire AIDs; the CMS refuses applications outside them.
    """

    slug = models.SlugField(max_length=50, unique=True)
    name = models.CharField(max_length=200)
    gp_aid_prefix = models.CharField(max_length=32, validators=[validate_gp_aid],
                                     help_text="hex, 5-16 bytes, e.g. A00000061700CAFE0001")
    desfire_aid_first = models.PositiveIntegerField(validators=[MinValueValidator(1),
                                                                MaxValueValidator(0xFFFFFF)])
    desfire_aid_last = models.PositiveIntegerField(validators=[MinValueValidator(1),
                                                               MaxValueValidator(0xFFFFFF)])
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    tenant_path = "id"

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug

    def clean(self) -> None:
        if self.desfire_aid_first is not None and self.desfire_aid_last is not None \
                and self.desfire_aid_first > self.desfire_aid_last:
            raise ValidationError({"desfire_aid_last": "must not be below desfire_aid_first"})

    def owns_gp_aid(self, aid_hex: str) -> bool:
        prefix = self.gp_aid_prefix.upper()
        return aid_hex.upper().startswith(prefix) and len(aid_hex) > len(prefix)

    def owns_desfire_aid(self, aid_hex: str) -> bool:
        value = int(aid_hex, 16)
        return self.desfire_aid_first <= value <= self.desfire_aid_last
