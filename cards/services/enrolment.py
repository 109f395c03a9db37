"""A station enrols itself: its one-time token proves who it is, and it hands over its two public keys.

No user is logged in (the token is the credential), so every refusal is audited here, outside the
transaction that would have recorded the enrolment. The token's digest is kept after use so that a
second attempt with the same token is told "already used" rather than "wrong" (only someone who
holds the token learns that; an unknown code or a wrong token are one and the same answer).
"""
from __future__ import annotations

import hmac
import re

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from audit.services import record_event
from cards.models import Station
from cards.models.stations import StationStatus
from cards.services.stations import station_match_enrolment_token
from cms.models import token_digest
from keys import signing

_KEY_HEX = re.compile(r"^[0-9a-fA-F]{64}$")


class EnrolmentRefused(Exception):
    """The token is wrong, expired or used: `field` and `message` go into the 4xx body."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def _check_keys(hpke_public_key: str, sign_public_key: str) -> None:
    errors: dict[str, list[str]] = {}
    for field, value, cls in (("hpke_public_key", hpke_public_key, X25519PublicKey),
                              ("sign_public_key", sign_public_key, Ed25519PublicKey)):
        if not isinstance(value, str) or not _KEY_HEX.match(value):
            errors[field] = ["must be 32 bytes as 64 hexadecimal digits (the raw public key)"]
            continue
        try:
            cls.from_public_bytes(bytes.fromhex(value))
        except ValueError:
            errors[field] = ["is not a valid public key"]
    if errors:
        raise ValidationError(errors)


def _why_refused(code: str, token: str) -> tuple[Station | None, str, str]:
    """(station if the token is its own, reason code, message for the caller)."""
    station = Station.objects.select_related("tenant").filter(code=code).first()
    generic = (None, "invalid", "the enrolment token is not valid for this station")
    if station is None or not station.enrolment_token_digest:
        return generic
    if not hmac.compare_digest(station.enrolment_token_digest, token_digest(token)):
        return (station, "invalid", generic[2])
    if station.status != StationStatus.PENDING:
        return station, "used", "the enrolment token was already used: ask an admin for a new station"
    return station, "expired", "the enrolment token has expired: ask an admin to re-issue one"


def station_enroll(*, code: str, token: str, hpke_public_key: str, sign_public_key: str,
                   ip: str | None = None) -> tuple[Station, dict]:
    """Record the station's public keys (status enrolled; an admin approves it) and return the CMS's."""
    _check_keys(hpke_public_key, sign_public_key)
    station = station_match_enrolment_token(code=code, token=token)
    if station is None:
        known, reason, message = _why_refused(code, token)
        with transaction.atomic():
            record_event(action="station.enrolment_refused", actor_type="station", actor_name=code[:150],
                         tenant=known.tenant if known else None, result="failure",
                         details={"station": code[:50], "reason": reason, "ip": ip or ""})
        raise EnrolmentRefused(reason, message)
    with transaction.atomic():
        station = Station.objects.select_for_update(of=("self",)).select_related("tenant").get(pk=station.pk)
        if station.status != StationStatus.PENDING:
            raise EnrolmentRefused("used", "the enrolment token was already used")
        # Vault first: if the signing key cannot be read (sealed Vault) nothing is recorded and the
        # token stays usable.
        info = signing.enrolment_info()
        station.hpke_public_key = hpke_public_key.lower()
        station.sign_public_key = sign_public_key.lower()
        station.status = StationStatus.ENROLLED
        station.enrolled_at = timezone.now()
        station.cms_signing_key_version = info["cms_signing_key_version"]  # its jobs are signed with it
        station.enrolment_expires_at = None  # one-time: the digest stays only to say "already used"
        if ip:
            station.last_ip = ip
        station.save(update_fields=["hpke_public_key", "sign_public_key", "status", "enrolled_at",
                                    "enrolment_expires_at", "last_ip", "cms_signing_key_version"])
        record_event(action="station.enrolled", actor_type="station", actor_name=station.code,
                     tenant=station.tenant,
                     details={"station": station.code, "ip": ip or "",
                              "hpke_public_key": station.hpke_public_key,
                              "sign_public_key": station.sign_public_key,
                              "cms_signing_key_version": info["cms_signing_key_version"]})
    return station, {"station": station.code, "status": station.status, "queue": station.queue, **info}
