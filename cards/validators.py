"""Validators for card-world identifiers: hex strings, UIDs, AIDs."""
from __future__ import annotations

import re

from django.core.exceptions import ValidationError

_HEX = re.compile(r"^(?:[0-9A-F]{2})+$")


def normalise_hex(value: str) -> str:
    return value.replace(" ", "").replace(":", "").upper()


def validate_hex(value: str) -> None:
    if not _HEX.match(value or ""):
        raise ValidationError("must be an even number of hexadecimal digits", code="hex")


def validate_uid(value: str) -> None:
    validate_hex(value)
    if len(value) // 2 not in (4, 7, 10):
        raise ValidationError("a card UID is 4, 7 or 10 bytes", code="uid_length")


def validate_gp_aid(value: str) -> None:
    validate_hex(value)
    if not 5 <= len(value) // 2 <= 16:
        raise ValidationError("a GlobalPlatform AID is 5 to 16 bytes", code="aid_length")


def validate_desfire_aid(value: str) -> None:
    validate_hex(value)
    if len(value) != 6:
        raise ValidationError("a DESFire AID is 3 bytes (6 hex digits)", code="aid_length")
    if value == "000000":
        raise ValidationError("AID 000000 is the PICC level, not an application", code="aid_picc")
