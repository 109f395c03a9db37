"""Card lifecycle after provisioning: suspend, resume, revoke with a reason, replace; each change audited."""
from __future__ import annotations

import hashlib
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.utils import timezone

from cards.models import Card, Order
from cards.models.cards import CardState
from cards.services.audit_log import record
from cards.services.orders import order_create
from cards.validators import normalise_hex, validate_uid
from cms.scoping import ensure_allowed


class RevokeReason(models.TextChoices):
    LOST = "lost"
    STOLEN = "stolen"
    DAMAGED = "damaged"
    COMPROMISED = "compromised"


def _locked(card: Card, actor) -> Card:
    ensure_allowed(card, actor, "manage")
    return Card.objects.select_for_update(of=("self",)).select_related("tenant").get(pk=card.pk)


def _move(card: Card, state: str, reason: str, *, actor, action: str, details: dict | None = None) -> Card:
    before = card.state
    card.state, card.state_reason = state, reason[:200]
    card.save(update_fields=["state", "state_reason", "updated_at"])
    record(action, actor=actor, tenant=card.tenant, card_uid=card.uid,
           details={"before": before, "after": state, "reason": reason[:200], **(details or {})})
    return card


@transaction.atomic
def card_suspend(*, actor, card: Card, reason: str = "") -> Card:
    """Temporarily refused at stations; resuming restores it unchanged."""
    card = _locked(card, actor)
    if card.state != CardState.ACTIVE:
        raise ValidationError({"state": [f"the card is {card.state}; only an active card can be suspended"]})
    return _move(card, CardState.SUSPENDED, reason, actor=actor, action="card.suspended")


@transaction.atomic
def card_resume(*, actor, card: Card) -> Card:
    card = _locked(card, actor)
    if card.state != CardState.SUSPENDED:
        raise ValidationError({"state": [f"the card is {card.state}; only a suspended card can be resumed"]})
    return _move(card, CardState.ACTIVE, "", actor=actor, action="card.resumed")


@transaction.atomic
def card_revoke(*, actor, card: Card, reason: str) -> Card:
    """For good. Its active key versions are retired with the grace period, after which the
    grace sweep (keys.tasks.grace_sweep) destroys them in Vault."""
    from keys.models import KeyVersion, VersionState  # keys imports cards: import at use

    if reason not in RevokeReason.values:
        raise ValidationError({"reason": [f"must be one of {', '.join(RevokeReason.values)}"]})
    card = _locked(card, actor)
    if card.state == CardState.REVOKED:
        raise ValidationError({"state": ["the card is already revoked"]})
    now = timezone.now()
    grace_until = now + timedelta(days=settings.KEY_GRACE_PERIOD_DAYS)
    retired = KeyVersion.objects.filter(slot__card=card, state=VersionState.ACTIVE) \
        .update(state=VersionState.RETIRED, retired_at=now, grace_until=grace_until)
    return _move(card, CardState.REVOKED, reason, actor=actor, action="card.revoked",
                 details={"key_versions_retired": retired, "keys_destroyed_after": grace_until.isoformat()})


@transaction.atomic
def card_replace(*, actor, card: Card, new_uid: str, reason: str) -> Order:
    """The old card is revoked (its keys retired, destroyed after the grace period) and an order naming the
    new card's UID, with the old card's profile, is placed: the new card gets that profile the first time
    it is presented at any of the tenant's stations. Both steps are audited, or neither happens."""
    new_uid = normalise_hex(new_uid or "")
    try:
        validate_uid(new_uid)
    except ValidationError as exc:
        raise ValidationError({"new_uid": exc.messages}) from None
    if Card.objects.filter(uid=new_uid).exists():
        raise ValidationError({"new_uid": [f"card {new_uid} is already known; a replacement must be a new "
                                           "card"]})
    ensure_allowed(card, actor, "manage")
    if card.profile_id is None:
        raise ValidationError({"profile": [f"card {card.uid} has no profile for its replacement to inherit"]})
    old = card_revoke(actor=actor, card=card, reason=reason)
    key = f"replace:{old.uid}:{new_uid}"
    order, _ = order_create(actor=actor, tenant=old.tenant, idempotency_key=key,
                            fingerprint=hashlib.sha256(key.encode()).hexdigest(), profile=old.profile,
                            uids=[new_uid])
    record("card.replaced", actor=actor, tenant=old.tenant, card_uid=new_uid,
           details={"replaces": old.uid, "reason": reason, "profile": str(old.profile), "order": order.pk})
    return order
