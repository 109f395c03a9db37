"""MES orders, idempotent by Idempotency-Key: a replay returns the order, another body conflicts."""
from __future__ import annotations

import hashlib
import json
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from cards.models import CardProfile, Order, Station, Tenant
from cards.models.stations import StationStatus
from cards.services.audit_log import record
from cards.validators import normalise_hex, validate_uid
from cms.scoping import actor_name, ensure_tenant

MAX_UIDS = 10_000
MAX_QUANTITY = 1_000_000


class IdempotencyConflict(Exception):
    """The Idempotency-Key was used before with another request body."""


def request_fingerprint(body: Any) -> str:
    """SHA-256 of the body in canonical JSON (sorted keys, no spaces)."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def order_replay(*, actor, tenant: Tenant, idempotency_key: str, fingerprint: str) -> Order | None:
    """The order this key already made (same body), None if the key is new; conflict if the body differs."""
    ensure_tenant(tenant.pk, actor, "operate")
    order = Order.objects.filter(tenant=tenant, idempotency_key=idempotency_key).first()
    if order is not None and order.request_fingerprint != fingerprint:
        raise IdempotencyConflict("this Idempotency-Key was used with another request body")
    return order


def order_create(*, actor, tenant: Tenant, idempotency_key: str, fingerprint: str, profile: CardProfile,
                 station: Station | None = None, line: str = "", quantity: int | None = None,
                 uids: list[str] | None = None) -> tuple[Order, bool]:
    """(order, created): a concurrent request with the same key gets the other's order, or a conflict."""
    try:
        with transaction.atomic():
            return _order_create(actor=actor, tenant=tenant, idempotency_key=idempotency_key,
                                 fingerprint=fingerprint, profile=profile, station=station, line=line,
                                 quantity=quantity, uids=uids), True
    except IntegrityError:
        order = order_replay(actor=actor, tenant=tenant, idempotency_key=idempotency_key,
                             fingerprint=fingerprint)
        if order is None:
            raise
        return order, False


def _order_create(*, actor, tenant, idempotency_key, fingerprint, profile, station, line, quantity,
                  uids) -> Order:
    ensure_tenant(tenant.pk, actor, "operate")
    errors: dict[str, list[str]] = {}
    if profile.tenant_id != tenant.pk:
        errors["profile"] = ["belongs to another tenant"]
    elif not profile.is_active:
        errors["profile"] = [f"{profile} is deactivated"]
    if station is not None:
        if station.tenant_id != tenant.pk:
            errors["station"] = ["belongs to another tenant"]
        elif station.status == StationStatus.REVOKED:
            errors["station"] = ["is revoked"]
    if (quantity is None) == (not uids):
        errors["quantity"] = ["give either a quantity or a list of uids"]
    normalised = [normalise_hex(uid) for uid in uids or []]
    for index, uid in enumerate(normalised):
        try:
            validate_uid(uid)
        except ValidationError as exc:
            errors.setdefault("uids", []).append(f"[{index}] {exc.messages[0]}")
    if len(set(normalised)) != len(normalised):
        errors.setdefault("uids", []).append("a UID is listed twice")
    if errors:
        raise ValidationError(errors)
    order = Order.objects.create(tenant=tenant, profile=profile, station=station, line=line,
                                 quantity=quantity if quantity is not None else len(normalised),
                                 uids=normalised, idempotency_key=idempotency_key,
                                 request_fingerprint=fingerprint, created_by=actor_name(actor))
    record("order.created", actor=actor, tenant=tenant,
           details={"order": order.pk, "profile": str(profile), "quantity": order.quantity,
                    "station": station.code if station else "", "line": line})
    return order
