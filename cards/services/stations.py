"""Personalization stations: created with a one-time enrolment token, then approved or revoked by an admin."""
from __future__ import annotations

import hmac
import secrets
from datetime import timedelta

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from cards.models import Station, Tenant
from cards.models.stations import StationStatus
from cards.services.audit_log import record
from cms.models import token_digest
from cms.scoping import actor_name, ensure_allowed, ensure_tenant

ENROLMENT_TTL = timedelta(hours=24)
ENROLMENT_TOKEN_PREFIX = "enr_"


def _new_enrolment_token(station: Station) -> str:
    """Store only the HMAC digest; the plain token is shown once, to the admin who asked."""
    plain = ENROLMENT_TOKEN_PREFIX + secrets.token_urlsafe(32)
    station.enrolment_token_digest = token_digest(plain)
    station.enrolment_expires_at = timezone.now() + ENROLMENT_TTL
    return plain


@transaction.atomic
def station_create(*, actor, tenant: Tenant, code: str, line: str = "",
                   name: str = "") -> tuple[Station, str]:
    ensure_tenant(tenant.pk, actor, "manage")
    if Station.objects.filter(code=code).exists():
        raise ValidationError({"code": ["a station with this code exists"]})
    station = Station(tenant=tenant, code=code, line=line, name=name)
    plain = _new_enrolment_token(station)
    station.full_clean()
    station.save()
    record("station.created", actor=actor, tenant=tenant, details={"station": code, "line": line})
    return station, plain


@transaction.atomic
def station_enrolment_reissue(*, actor, station: Station) -> tuple[Station, str]:
    """A fresh token for a station that has not enrolled yet (the old one stops working)."""
    ensure_allowed(station, actor, "manage")
    station = Station.objects.select_for_update().get(pk=station.pk)
    if station.status != StationStatus.PENDING:
        raise ValidationError({"status": [f"the station is {station.status}; only a pending station enrols"]})
    plain = _new_enrolment_token(station)
    station.save(update_fields=["enrolment_token_digest", "enrolment_expires_at"])
    record("station.enrolment_reissued", actor=actor, tenant=station.tenant,
           details={"station": station.code})
    return station, plain


def station_match_enrolment_token(*, code: str, token: str) -> Station | None:
    """The pending station `code` if `token` is its unexpired enrolment token (for the agent's enrolment)."""
    station = Station.objects.filter(code=code, status=StationStatus.PENDING).first()
    if station is None or not station.enrolment_token_digest or station.enrolment_expires_at is None:
        return None
    if station.enrolment_expires_at <= timezone.now():
        return None
    if not hmac.compare_digest(station.enrolment_token_digest, token_digest(token)):
        return None
    return station


@transaction.atomic
def station_approve(*, actor, station: Station) -> Station:
    ensure_allowed(station, actor, "manage")
    station = Station.objects.select_for_update().get(pk=station.pk)
    if station.status != StationStatus.ENROLLED:
        raise ValidationError({"status": [f"the station is {station.status}; only an enrolled station "
                                          f"can be approved"]})
    if not (station.hpke_public_key and station.sign_public_key):
        raise ValidationError({"status": ["the station has not sent its public keys"]})
    station.status = StationStatus.APPROVED
    station.approved_at = timezone.now()
    station.approved_by = actor_name(actor)
    station.save(update_fields=["status", "approved_at", "approved_by"])
    record("station.approved", actor=actor, tenant=station.tenant,
           details={"station": station.code, "hpke_public_key": station.hpke_public_key,
                    "sign_public_key": station.sign_public_key})
    return station


@transaction.atomic
def station_revoke(*, actor, station: Station, reason: str = "") -> Station:
    """The station gets no more jobs and its results are refused; it must enrol again as a new station."""
    ensure_allowed(station, actor, "manage")
    station = Station.objects.select_for_update().get(pk=station.pk)
    if station.status == StationStatus.REVOKED:
        return station
    previous = station.status
    station.status = StationStatus.REVOKED
    station.revoked_at = timezone.now()
    station.enrolment_token_digest = ""
    station.enrolment_expires_at = None
    station.save(update_fields=["status", "revoked_at", "enrolment_token_digest", "enrolment_expires_at"])
    record("station.revoked", actor=actor, tenant=station.tenant,
           details={"station": station.code, "previous_status": previous, "reason": reason})
    return station
