"""Cards and what is on them: applications (AIDs) and files, in seed 003's vocabulary."""
from __future__ import annotations

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from cards.validators import validate_hex, validate_uid


class ChipType(models.TextChoices):
    DESFIRE_EV1 = "desfire_ev1", "MIFARE DESFire EV1"
    DESFIRE_EV2 = "desfire_ev2", "MIFARE DESFire EV2"
    DESFIRE_EV3 = "desfire_ev3", "MIFARE DESFire EV3"
    JCOP4 = "jcop4", "NXP JCOP 4"

    @classmethod
    def family(cls, chip_type: str) -> str:
        return "jcop" if chip_type == cls.JCOP4 else "desfire"


class CardState(models.TextChoices):
    NEW = "new"
    PROVISIONING = "provisioning"
    ACTIVE = "active"
    SUSPENDED = "suspended"
    REVOKED = "revoked"
    QUARANTINED = "quarantined"


class Card(models.Model):
    uid = models.CharField(max_length=20, unique=True, validators=[validate_uid])
    tenant = models.ForeignKey("cards.Tenant", on_delete=models.PROTECT, related_name="cards")
    chip_type = models.CharField(max_length=16, choices=ChipType.choices)
    atr = models.CharField(max_length=66, blank=True, validators=[validate_hex])
    # GP Key Diversification Data (GET DATA 'CF', the first 10 bytes of INITIALIZE UPDATE's answer):
    # the context JCOP ISD keys are diversified with; blank for DESFire and for cards not yet read.
    kdd = models.CharField(max_length=20, blank=True, default="", validators=[validate_hex])
    state = models.CharField(max_length=16, choices=CardState.choices, default=CardState.NEW)
    state_reason = models.CharField(max_length=200, blank=True)
    profile = models.ForeignKey("cards.CardProfile", null=True, blank=True, on_delete=models.PROTECT,
                                related_name="cards")
    # Set when the CMS cannot be sure which key version a slot holds (a key change was sent
    # but never confirmed): the next presentation must probe before anything authenticates.
    probe_required = models.BooleanField(default=False)
    last_station = models.ForeignKey("cards.Station", null=True, blank=True, on_delete=models.SET_NULL,
                                     related_name="+")
    last_seen_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    tenant_path = "tenant"

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["tenant", "state"])]

    def __str__(self) -> str:
        return f"{self.get_chip_type_display()} {self.uid}"


class AppKind(models.TextChoices):
    DESFIRE = "desfire", "DESFire application"
    GP = "gp", "GlobalPlatform applet or security domain"


class KeyType(models.TextChoices):
    AES128 = "aes128", "AES-128"
    DES3K = "3k3des", "3K3DES"
    DES2K = "2k3des", "2K3DES"


class Application(models.Model):
    card = models.ForeignKey(Card, on_delete=models.CASCADE, related_name="applications")
    tenant = models.ForeignKey("cards.Tenant", on_delete=models.PROTECT, related_name="applications")
    kind = models.CharField(max_length=8, choices=AppKind.choices)
    aid = models.CharField(max_length=32, validators=[validate_hex])
    key_settings = models.PositiveSmallIntegerField(default=0x0F, validators=[MaxValueValidator(0xFF)])
    key_type = models.CharField(max_length=8, choices=KeyType.choices, default=KeyType.AES128)
    num_keys = models.PositiveSmallIntegerField(default=1, validators=[MinValueValidator(1),
                                                                       MaxValueValidator(14)])
    created_at = models.DateTimeField(auto_now_add=True)

    tenant_path = "tenant"

    class Meta:
        constraints = [models.UniqueConstraint(fields=["card", "aid"], name="unique_aid_per_card")]
        ordering = ["card_id", "aid"]

    def __str__(self) -> str:
        return f"{self.aid} on {self.card.uid}"


class FileType(models.TextChoices):
    STANDARD = "standard"
    BACKUP = "backup"
    VALUE = "value"
    LINEAR_RECORD = "linear_record"
    CYCLIC_RECORD = "cyclic_record"


class CommMode(models.TextChoices):
    PLAIN = "plain"
    MAC = "mac"
    FULL = "full"


# An access right is a key number 0..13, 14 (free access) or 15 (never).
_ACCESS = [MinValueValidator(0), MaxValueValidator(15)]


class CardFile(models.Model):
    application = models.ForeignKey(Application, on_delete=models.CASCADE, related_name="files")
    file_no = models.PositiveSmallIntegerField(validators=[MaxValueValidator(31)])
    file_type = models.CharField(max_length=16, choices=FileType.choices)
    comm_mode = models.CharField(max_length=8, choices=CommMode.choices, default=CommMode.FULL)
    read_key = models.PositiveSmallIntegerField(validators=_ACCESS)
    write_key = models.PositiveSmallIntegerField(validators=_ACCESS)
    read_write_key = models.PositiveSmallIntegerField(validators=_ACCESS)
    change_key = models.PositiveSmallIntegerField(validators=_ACCESS)
    size = models.PositiveIntegerField(default=0, help_text="bytes, or record size for record files")
    options = models.JSONField(default=dict, blank=True,
                               help_text="value limits or record counts, by file type")

    tenant_path = "application__tenant"

    class Meta:
        db_table = "cards_file"
        constraints = [models.UniqueConstraint(fields=["application", "file_no"],
                                               name="unique_file_no_per_application")]
        ordering = ["application_id", "file_no"]

    def __str__(self) -> str:
        return f"{self.application} file {self.file_no:02X}"
