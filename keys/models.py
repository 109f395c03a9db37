"""Key slots and key versions: references, states and KCVs. Never key bytes, plain or wrapped."""
from __future__ import annotations

from django.core.validators import MaxValueValidator
from django.db import models

from cards.validators import validate_hex


class KeyRole(models.TextChoices):
    CARD_MASTER = "cmk", "Card (PICC) master key"
    APP_MASTER = "amk", "Application master key"
    APP_KEY = "app_key", "File / role key"
    ISD_ENC = "isd_enc", "JCOP ISD ENC"
    ISD_MAC = "isd_mac", "JCOP ISD MAC"
    ISD_DEK = "isd_dek", "JCOP ISD DEK"


class KeyPolicy(models.TextChoices):
    RANDOM = "random", "Random per card, wrapped in Vault"
    DIVERSIFIED = "diversified", "Diversified from a master key version"


class DiversificationMethod(models.TextChoices):
    AN10922 = "an10922", "NXP AN10922 AES-128"
    KDF3 = "kdf3", "SP 800-108 CMAC (JCOP KDF3)"


class VersionState(models.TextChoices):
    PENDING = "pending"
    ACTIVE = "active"
    RETIRED = "retired"
    DESTROYED = "destroyed"


class MasterKey(models.Model):
    """A tenant's master key from which per-card keys are diversified (AN10922 or KDF3)."""

    tenant = models.ForeignKey("cards.Tenant", on_delete=models.PROTECT, related_name="master_keys")
    name = models.SlugField(max_length=80)
    method = models.CharField(max_length=16, choices=DiversificationMethod.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    tenant_path = "tenant"

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="unique_master_key_name")]

    def __str__(self) -> str:
        return f"{self.tenant}/{self.name}"


class MasterKeyVersion(models.Model):
    master = models.ForeignKey(MasterKey, on_delete=models.PROTECT, related_name="versions")
    number = models.PositiveSmallIntegerField(validators=[MaxValueValidator(255)])
    state = models.CharField(max_length=16, choices=VersionState.choices, default=VersionState.PENDING)
    kcv = models.CharField(max_length=6, validators=[validate_hex])
    vault_ref = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)
    activated_at = models.DateTimeField(null=True, blank=True)
    retired_at = models.DateTimeField(null=True, blank=True)
    destroyed_at = models.DateTimeField(null=True, blank=True)

    tenant_path = "master__tenant"

    class Meta:
        constraints = [models.UniqueConstraint(fields=["master", "number"], name="unique_master_version")]
        ordering = ["master_id", "-number"]

    def __str__(self) -> str:
        return f"{self.master} v{self.number}"


class KeySlot(models.Model):
    """One key position on one card: PICC master, an application's key number, or an ISD key."""

    tenant = models.ForeignKey("cards.Tenant", on_delete=models.PROTECT, related_name="key_slots")
    card = models.ForeignKey("cards.Card", on_delete=models.CASCADE, related_name="key_slots")
    application = models.ForeignKey("cards.Application", null=True, blank=True, on_delete=models.CASCADE,
                                    related_name="key_slots")
    role = models.CharField(max_length=16, choices=KeyRole.choices)
    key_no = models.PositiveSmallIntegerField(validators=[MaxValueValidator(127)])
    policy = models.CharField(max_length=16, choices=KeyPolicy.choices, default=KeyPolicy.RANDOM)
    master = models.ForeignKey(MasterKey, null=True, blank=True, on_delete=models.PROTECT,
                               related_name="slots")
    label = models.CharField(max_length=100, blank=True)

    tenant_path = "tenant"

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["card", "application", "role", "key_no"], name="unique_key_slot"),
            models.UniqueConstraint(fields=["card", "role", "key_no"], condition=models.Q(application=None),
                                    name="unique_card_level_key_slot"),
        ]
        ordering = ["card_id", "application_id", "key_no"]

    def __str__(self) -> str:
        where = self.application.aid if self.application_id else "card"
        return f"{self.get_role_display()} #{self.key_no} ({where})"


class KeyVersion(models.Model):
    slot = models.ForeignKey(KeySlot, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveSmallIntegerField(validators=[MaxValueValidator(255)],
                                              help_text="DESFire key version or GP KVN")
    state = models.CharField(max_length=16, choices=VersionState.choices, default=VersionState.PENDING)
    policy = models.CharField(max_length=16, choices=KeyPolicy.choices)
    kcv = models.CharField(max_length=6, blank=True, validators=[validate_hex])
    vault_ref = models.CharField(max_length=200, blank=True,
                                 help_text="random keys: where the wrapped key is")
    master_version = models.ForeignKey(MasterKeyVersion, null=True, blank=True, on_delete=models.PROTECT,
                                       related_name="derived_versions")
    created_at = models.DateTimeField(auto_now_add=True)
    activated_at = models.DateTimeField(null=True, blank=True)
    retired_at = models.DateTimeField(null=True, blank=True)
    grace_until = models.DateTimeField(null=True, blank=True)
    destroyed_at = models.DateTimeField(null=True, blank=True)

    tenant_path = "slot__tenant"

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["slot", "number"], name="unique_key_version"),
            models.UniqueConstraint(fields=["slot"], condition=models.Q(state="active"),
                                    name="one_active_version_per_slot"),
        ]
        ordering = ["slot_id", "-number"]

    def __str__(self) -> str:
        return f"{self.slot} v{self.number} ({self.state})"


from keys.models_campaigns import (  # noqa: E402,F401 - campaign models live in their own module
    CampaignItem,
    KekRotation,
    RotationCampaign,
)
