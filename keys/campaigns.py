"""Rotation campaigns and KEK rotations: created by one admin, approved by another, run in batches.

Life of a campaign: awaiting_approval -> (a second admin of the tenant approves) approved ->
running (start snapshots the slots, then batches create pending versions, ONE Vault batch per
batch) <-> paused; rollback from running/paused/completed; completed once every card has rotated.

How cards rotate: the job compiler (cards.compiler) already sends a card any pending version
newer than its active one, and the job result activates it (keys.sealing.version_activate).
A campaign therefore only creates the pending versions; `campaign_sync` notices activations.
`versions_owed(card)` says which pending versions a campaign asked of a card (and which key to
authenticate with); `withheld_version_ids(card)` names those of PAUSED campaigns, which the
ledger (cards.services.ledger.ledger_for) should leave out so a pause stops rotations at stations.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Count, Q
from django.utils import timezone

from audit.services import record_event
from cards.models import Card, Tenant
from cards.models.cards import CardState
from cms.models import Membership, Role
from cms.scoping import ensure_allowed, ensure_tenant
from keys import services
from keys.errors import KeyStateError, KeystoreError
from keys.models import KeyPolicy, KeyRole, KeySlot, KeyVersion, MasterKeyVersion, VersionState
from keys.models_campaigns import (
    CampaignItem,
    CampaignState,
    CampaignTarget,
    ItemState,
    KekRotation,
    KekRotationState,
    RotationCampaign,
)

# Cards in these states are not rotated: they will never be presented again, or a person must decide.
SKIPPED_CARD_STATES = (CardState.REVOKED, CardState.QUARANTINED)


class CampaignError(Exception):
    """A campaign action that does not fit the campaign's state; the message says why."""


def _event(action: str, campaign: RotationCampaign, *, actor, details: dict | None = None,
           result: str = "success") -> None:
    record_event(action=action, actor=actor, tenant=campaign.tenant, result=result,
                 details={"campaign": campaign.pk, "name": campaign.name, **(details or {})})


def _is_tenant_admin(user, tenant_id: int) -> bool:
    return Membership.objects.filter(user_id=getattr(user, "pk", None), tenant_id=tenant_id,
                                     role=Role.ADMIN).exists()


def _locked(campaign: RotationCampaign) -> RotationCampaign:
    return (RotationCampaign.objects.select_for_update(of=("self",)).select_related("tenant")
            .get(pk=campaign.pk))


# --- Creating and approving ------------------------------------------------------------------------

@transaction.atomic
def campaign_create(*, actor, tenant: Tenant, name: str, roles: list[str], target: str,
                    master_version: MasterKeyVersion | None = None, batch_size: int = 100,
                    grace_days: int = 30) -> RotationCampaign:
    ensure_tenant(tenant.pk, actor, "manage")
    errors: dict[str, list[str]] = {}
    roles = list(dict.fromkeys(roles))
    unknown = [r for r in roles if r not in KeyRole.values]
    if not roles or unknown:
        errors["roles"] = [f"unknown key slot role(s): {', '.join(unknown)}" if unknown
                           else "choose at least one key slot role"]
    if target not in CampaignTarget.values:
        errors["target"] = ["must be random or master_version"]
    elif target == CampaignTarget.MASTER_VERSION:
        if master_version is None:
            errors["master_version"] = ["a diversified-key campaign needs the new master key version"]
        elif master_version.master.tenant_id != tenant.pk:
            errors["master_version"] = ["belongs to another tenant"]
        elif master_version.state not in (VersionState.PENDING, VersionState.ACTIVE):
            errors["master_version"] = [f"is {master_version.state}"]
    elif master_version is not None:
        errors["master_version"] = ["a random-key campaign takes no master key version"]
    if not 1 <= batch_size <= 1000:
        errors["batch_size"] = ["must be 1..1000"]
    if not 0 <= grace_days <= 3650:
        errors["grace_days"] = ["must be 0..3650"]
    if not name.strip():
        errors["name"] = ["is required"]
    if errors:
        raise ValidationError(errors)
    campaign = RotationCampaign.objects.create(
        tenant=tenant, name=name.strip()[:100], roles=roles, target=target, master_version=master_version,
        batch_size=batch_size, grace_days=grace_days, created_by=actor)
    _event("keys.campaign_created", campaign, actor=actor, details={
        "roles": roles, "target": target, "batch_size": batch_size, "grace_days": grace_days,
        "master_version": (f"{master_version.master.name} v{master_version.number}"
                           if master_version else "")})
    return campaign


def campaign_approve(*, actor, campaign: RotationCampaign) -> RotationCampaign:
    """The second person's approval. The creator's own attempt is refused and audited as refused."""
    ensure_allowed(campaign, actor, "manage")
    refusal = ""
    with transaction.atomic():
        campaign = _locked(campaign)
        if campaign.state != CampaignState.AWAITING_APPROVAL:
            raise CampaignError(f"the campaign is {campaign.state}; only a campaign awaiting approval "
                                "can be approved")
        if campaign.created_by_id == actor.pk:
            refusal = "the creator of a campaign cannot approve it; a second admin must"
        elif not _is_tenant_admin(actor, campaign.tenant_id):
            refusal = f"only an admin of tenant {campaign.tenant.slug} can approve its campaigns"
        else:
            campaign.state, campaign.approved_by, campaign.approved_at = (
                CampaignState.APPROVED, actor, timezone.now())
            campaign.save(update_fields=["state", "approved_by", "approved_at"])
            _event("keys.campaign_approved", campaign, actor=actor,
                   details={"created_by": campaign.created_by.get_username()})
            return campaign
    with transaction.atomic():
        _event("keys.campaign_approval_refused", campaign, actor=actor, result="refused",
               details={"reason": refusal})
    raise PermissionDenied(refusal)


@transaction.atomic
def campaign_cancel(*, actor, campaign: RotationCampaign) -> RotationCampaign:
    """Drop a campaign that has not started; nothing was created for it."""
    ensure_allowed(campaign, actor, "manage")
    campaign = _locked(campaign)
    if campaign.state not in (CampaignState.AWAITING_APPROVAL, CampaignState.APPROVED):
        raise CampaignError(f"the campaign is {campaign.state}; a started campaign is rolled back instead")
    campaign.state, campaign.finished_at = CampaignState.CANCELLED, timezone.now()
    campaign.save(update_fields=["state", "finished_at"])
    _event("keys.campaign_cancelled", campaign, actor=actor)
    return campaign


# --- Running ---------------------------------------------------------------------------------------

def _eligible_slots(campaign: RotationCampaign):
    slots = KeySlot.objects.filter(tenant=campaign.tenant, role__in=campaign.roles) \
        .exclude(card__state__in=SKIPPED_CARD_STATES)
    if campaign.target == CampaignTarget.MASTER_VERSION:
        slots = slots.filter(policy=KeyPolicy.DIVERSIFIED, master=campaign.master_version.master)
    else:
        slots = slots.filter(policy=KeyPolicy.RANDOM)
    return slots


def _enqueue_batch(campaign_id: int) -> None:
    from keys.tasks import campaign_batch

    transaction.on_commit(lambda: campaign_batch.delay(campaign_id))


@transaction.atomic
def campaign_start(*, actor, campaign: RotationCampaign) -> RotationCampaign:
    """Snapshot the slots to rotate (each with its active version) and queue the first batch."""
    ensure_allowed(campaign, actor, "manage")
    campaign = _locked(campaign)
    if campaign.state != CampaignState.APPROVED:
        raise CampaignError(f"the campaign is {campaign.state}; only an approved campaign can start")
    active = {v.slot_id: v.pk for v in KeyVersion.objects.filter(
        slot__in=_eligible_slots(campaign), state=VersionState.ACTIVE).only("pk", "slot_id")}
    busy = set(CampaignItem.objects.filter(
        slot_id__in=active, state__in=(ItemState.WAITING, ItemState.PENDING, ItemState.REKEY_BACK))
        .values_list("slot_id", flat=True))
    slots = KeySlot.objects.filter(pk__in=set(active) - busy).only("pk", "card_id")
    CampaignItem.objects.bulk_create(
        [CampaignItem(campaign=campaign, card_id=s.card_id, slot_id=s.pk, previous_version_id=active[s.pk])
         for s in slots], batch_size=1000)
    campaign.state, campaign.started_at = CampaignState.RUNNING, timezone.now()
    campaign.save(update_fields=["state", "started_at"])
    _event("keys.campaign_started", campaign, actor=actor, details={
        "slots": len(active) - len(busy), "skipped_in_other_campaigns": len(busy)})
    _enqueue_batch(campaign.pk)
    return campaign


def campaign_run_batch(*, campaign_id: int) -> int:
    """Create pending versions for the next `batch_size` cards; the number of items done (0 = none left).

    One call to `keys.services.key_versions_create_batch` per batch: one Vault Transit batch.
    A Vault failure rolls the batch back, records the error and pauses the campaign.
    """
    try:
        with transaction.atomic():
            campaign = _locked(RotationCampaign(pk=campaign_id))
            if campaign.state != CampaignState.RUNNING:
                return 0
            waiting = CampaignItem.objects.filter(campaign=campaign, state=ItemState.WAITING)
            card_ids = list(waiting.order_by("card_id").values_list("card_id", flat=True)
                            .distinct()[:campaign.batch_size])
            if not card_ids:
                _complete_if_done(campaign)
                return 0
            items = list(waiting.filter(card_id__in=card_ids).select_related("slot"))
            batch_no = (CampaignItem.objects.filter(campaign=campaign).exclude(batch_no=None)
                        .order_by("-batch_no").values_list("batch_no", flat=True).first() or 0) + 1
            versions = services.key_versions_create_batch(
                slots=[item.slot for item in items], master_version=campaign.master_version)
            by_slot = {v.slot_id: v for v in versions}
            now = timezone.now()
            for item in items:
                item.new_version, item.state = by_slot[item.slot_id], ItemState.PENDING
                item.batch_no, item.updated_at = batch_no, now
            CampaignItem.objects.bulk_update(items, ["new_version", "state", "batch_no", "updated_at"])
            _event("keys.campaign_batch", campaign, actor=None,
                   details={"batch_no": batch_no, "cards": len(card_ids), "versions": len(versions)})
            return len(items)
    except (KeystoreError, KeyStateError) as exc:
        with transaction.atomic():
            campaign = _locked(RotationCampaign(pk=campaign_id))
            campaign.state, campaign.last_error = CampaignState.PAUSED, str(exc)[:300]
            campaign.save(update_fields=["state", "last_error"])
            _event("keys.campaign_batch_failed", campaign, actor=None, result="failure",
                   details={"error": str(exc)[:300]})
        return 0


@transaction.atomic
def campaign_pause(*, actor, campaign: RotationCampaign) -> RotationCampaign:
    """Stop creating batches and stop handing out new keys; cards keep their current version."""
    ensure_allowed(campaign, actor, "manage")
    campaign = _locked(campaign)
    if campaign.state != CampaignState.RUNNING:
        raise CampaignError(f"the campaign is {campaign.state}; only a running campaign can be paused")
    campaign.state = CampaignState.PAUSED
    campaign.save(update_fields=["state"])
    _event("keys.campaign_paused", campaign, actor=actor)
    return campaign


@transaction.atomic
def campaign_resume(*, actor, campaign: RotationCampaign) -> RotationCampaign:
    ensure_allowed(campaign, actor, "manage")
    campaign = _locked(campaign)
    if campaign.state != CampaignState.PAUSED:
        raise CampaignError(f"the campaign is {campaign.state}; only a paused campaign can be resumed")
    campaign.state, campaign.last_error = CampaignState.RUNNING, ""
    campaign.save(update_fields=["state", "last_error"])
    _event("keys.campaign_resumed", campaign, actor=actor)
    _enqueue_batch(campaign.pk)
    return campaign


def campaign_rollback(*, actor, campaign: RotationCampaign) -> RotationCampaign:
    """Undo. Cards not yet rotated keep their previous version (still active): their pending
    versions are destroyed. Cards already rotated get a new pending version holding their previous
    key again (`keys.services.key_versions_restore_batch`), which the compiler sends the next
    time they are presented: the re-key back."""
    ensure_allowed(campaign, actor, "manage")
    campaign_sync(campaign)
    with transaction.atomic():
        campaign = _locked(campaign)
        if campaign.state not in (CampaignState.RUNNING, CampaignState.PAUSED, CampaignState.COMPLETED):
            raise CampaignError(f"the campaign is {campaign.state}; "
                                "only a started campaign can be rolled back")
        campaign.state, campaign.rolled_back_at = CampaignState.ROLLED_BACK, timezone.now()
        campaign.save(update_fields=["state", "rolled_back_at"])
        cancelled = CampaignItem.objects.filter(campaign=campaign, state=ItemState.WAITING) \
            .update(state=ItemState.CANCELLED)
        rotated = list(CampaignItem.objects.filter(campaign=campaign, state=ItemState.ROTATED)
                       .select_related("previous_version"))
        restorable = [i for i in rotated if i.previous_version.state != VersionState.DESTROYED]
        for item in rotated:
            if item not in restorable:
                item.state, item.error = ItemState.FAILED, "previous key already destroyed: no re-key back"
                item.save(update_fields=["state", "error", "updated_at"])
        restored = services.key_versions_restore_batch(versions=[i.previous_version for i in restorable],
                                                       actor=actor)
        by_slot = {v.slot_id: v for v in restored}
        for item in restorable:
            item.state, item.restore_version = ItemState.REKEY_BACK, by_slot[item.slot_id]
            item.updated_at = campaign.rolled_back_at
        CampaignItem.objects.bulk_update(restorable, ["state", "restore_version", "updated_at"])
        _event("keys.campaign_rolled_back", campaign, actor=actor, details={
            "cancelled_waiting": cancelled, "rekey_back": len(restorable)})
    # Each pending version is destroyed in its own transaction: one Vault failure leaves the
    # others done and this item visible, never a half-recorded destruction.
    destroyed = kept = 0
    for item in CampaignItem.objects.filter(campaign=campaign, state=ItemState.PENDING) \
            .select_related("new_version", "card"):
        try:
            with transaction.atomic():
                services.key_version_destroy(version=item.new_version, actor=actor)
                item.state = ItemState.CANCELLED
                item.save(update_fields=["state", "updated_at"])
            destroyed += 1
        except (KeyStateError, KeystoreError) as exc:
            CampaignItem.objects.filter(pk=item.pk).update(state=ItemState.CANCELLED,
                                                           error=f"pending version kept: {exc}"[:300])
            kept += 1
    if kept:
        with transaction.atomic():
            _event("keys.campaign_rollback_incomplete", campaign, actor=actor, result="failure",
                   details={"pending_destroyed": destroyed, "pending_kept": kept})
    return campaign


# --- What a presented card owes, and what it confirmed ---------------------------------------------

@dataclass(frozen=True)
class OwedKeyChange:
    """A key change a card owes: authenticate with `current`, change the slot's key to `target`."""

    campaign_id: int
    item_id: int
    slot: KeySlot
    current: KeyVersion
    target: KeyVersion


def versions_owed(card: Card) -> list[OwedKeyChange]:
    """Key changes `card` owes to running (or rolled-back) campaigns.

    The compiler already rotates a card to any pending version newer than its active one; this
    says which of those a campaign asked for (and which key to authenticate with).
    """
    owed = []
    items = CampaignItem.objects.filter(card=card).filter(
        Q(state=ItemState.PENDING, campaign__state=CampaignState.RUNNING,
          new_version__state=VersionState.PENDING)
        | Q(state=ItemState.REKEY_BACK, restore_version__state=VersionState.PENDING)
    ).select_related("slot", "slot__application", "previous_version", "new_version", "restore_version") \
        .order_by("slot_id")
    for item in items:
        if item.state == ItemState.PENDING:
            owed.append(OwedKeyChange(item.campaign_id, item.pk, item.slot, item.previous_version,
                                      item.new_version))
        else:
            owed.append(OwedKeyChange(item.campaign_id, item.pk, item.slot, item.new_version,
                                      item.restore_version))
    return owed


def withheld_version_ids(card: Card) -> set[int]:
    """Pending versions the compiler must NOT send yet: their campaign is paused.

    (`cards.services.ledger.ledger_for` should leave these out of the ledger's pending keys.)
    """
    return set(CampaignItem.objects.filter(card=card, state=ItemState.PENDING,
                                           campaign__state=CampaignState.PAUSED)
               .values_list("new_version_id", flat=True))


def campaign_sync(campaign: RotationCampaign) -> int:
    """Bring item states up to the key versions' states; the number of items moved.

    Jobs activate versions as cards confirm them (`keys.sealing.version_activate`, with the global
    grace period); here the campaign notices, gives the retired key ITS grace period, and
    completes when no card is left to rotate.
    """
    moved = 0
    moves = ((ItemState.PENDING, "new_version", ItemState.ROTATED, "previous_version"),
             (ItemState.REKEY_BACK, "restore_version", ItemState.RESTORED, "new_version"))
    for before, field, after, retired_field in moves:
        done = list(CampaignItem.objects.filter(campaign=campaign, state=before,
                                                **{f"{field}__state": VersionState.ACTIVE})
                    .select_related(retired_field, "card", "slot", "campaign__tenant"))
        for item in done:
            with transaction.atomic():
                retired = getattr(item, retired_field)
                if retired.state == VersionState.RETIRED and retired.retired_at:
                    retired.grace_until = retired.retired_at + timedelta(days=campaign.grace_days)
                    retired.save(update_fields=["grace_until"])
                item.state = after
                item.save(update_fields=["state", "updated_at"])
                record_event(action=f"keys.campaign_card_{after}", actor=None, tenant=item.campaign.tenant,
                             card_uid=item.card.uid, key_no=item.slot.key_no,
                             key_version=getattr(item, field).number,
                             details={"campaign": campaign.pk, "role": item.slot.role})
            moved += 1
    CampaignItem.objects.filter(campaign=campaign, state=ItemState.PENDING,
                                new_version__state=VersionState.DESTROYED).update(state=ItemState.CANCELLED)
    with transaction.atomic():
        _complete_if_done(_locked(campaign))  # re-read: the caller's copy may be stale
    return moved


def campaign_card_rotated(*, version: KeyVersion, actor=None, job_id: str = "") -> CampaignItem:
    """The card confirmed it holds `version` (a campaign's new or restore version): activate it,
    retire the one it replaces, and move the campaign on. Jobs do the same through
    `keys.sealing.version_activate`; both end in `campaign_sync`."""
    from keys.sealing import version_activate  # the pipeline's activation, shared

    item = CampaignItem.objects.select_related("campaign").filter(
        Q(new_version=version, state=ItemState.PENDING)
        | Q(restore_version=version, state=ItemState.REKEY_BACK)).first()
    if item is None:
        raise CampaignError(f"no campaign is waiting for key version {version.pk}")
    with transaction.atomic():
        version_activate(version, grace_days=item.campaign.grace_days, actor=actor, job_id=job_id)
    campaign_sync(item.campaign)
    item.refresh_from_db()
    return item


@transaction.atomic
def campaign_card_failed(*, version: KeyVersion, error: str, actor=None) -> CampaignItem:
    """The key change to `version` failed on the card (the job says why); a person decides what next."""
    item = (CampaignItem.objects.select_for_update(of=("self",))
            .select_related("campaign__tenant", "card", "slot")
            .filter(Q(new_version=version, state=ItemState.PENDING)
                    | Q(restore_version=version, state=ItemState.REKEY_BACK)).first())
    if item is None:
        raise CampaignError(f"no campaign is waiting for key version {version.pk}")
    item.state, item.error = ItemState.FAILED, error[:300]
    item.save(update_fields=["state", "error", "updated_at"])
    record_event(action="keys.campaign_card_failed", actor=actor, tenant=item.campaign.tenant,
                 result="failure", card_uid=item.card.uid, key_no=item.slot.key_no,
                 key_version=version.number,
                 details={"campaign": item.campaign_id, "error": error[:300]})
    return item


def _complete_if_done(campaign: RotationCampaign) -> None:
    open_items = CampaignItem.objects.filter(campaign=campaign,
                                             state__in=(ItemState.WAITING, ItemState.PENDING))
    if campaign.state == CampaignState.RUNNING and not open_items.exists():
        campaign.state, campaign.finished_at = CampaignState.COMPLETED, timezone.now()
        campaign.save(update_fields=["state", "finished_at"])
        _event("keys.campaign_completed", campaign, actor=None, details=campaign_progress(campaign))


# --- Reading ---------------------------------------------------------------------------------------

def campaign_progress(campaign: RotationCampaign) -> dict[str, int]:
    """Slots per item state, plus `total`; `pending` counts every slot not yet rotated (waiting or
    with its new version created, `version_created`)."""
    counts = dict(CampaignItem.objects.filter(campaign=campaign).values_list("state")
                  .annotate(n=Count("pk")).values_list("state", "n"))
    out = {state: counts.get(state, 0) for state in ItemState.values}
    out["total"] = sum(counts.values())
    out["version_created"] = out[ItemState.PENDING]
    out["pending"] = out[ItemState.WAITING] + out[ItemState.PENDING]  # not yet rotated, for the bar
    return out


def campaign_overdue_items(campaign: RotationCampaign, *, now=None):
    """Slots still not rotated after the grace period: their cards were not presented in time."""
    now = now or timezone.now()
    if campaign.deadline is None or campaign.deadline > now:
        return CampaignItem.objects.none()
    return CampaignItem.objects.filter(campaign=campaign, state=ItemState.PENDING) \
        .select_related("card", "slot").order_by("card__uid")


def grace_sweep(*, now=None) -> dict[str, int]:
    """Destroy (in Vault, audited) every retired card key version whose grace period has ended.

    Campaigns are synced first, so a retired key gets its campaign's grace period before the
    sweep looks at it.
    """
    for campaign in RotationCampaign.objects.filter(state__in=(CampaignState.RUNNING, CampaignState.PAUSED,
                                                               CampaignState.ROLLED_BACK)):
        campaign_sync(campaign)
    now = now or timezone.now()
    done = failed = 0
    for version in KeyVersion.objects.filter(state=VersionState.RETIRED, grace_until__lte=now).order_by("pk"):
        try:
            services.key_version_destroy(version=version, actor=None)
            done += 1
        except (KeyStateError, KeystoreError):
            failed += 1  # e.g. Vault unavailable: the next sweep tries again
    return {"destroyed": done, "failed": failed}


# --- KEK rotation, gated by a second admin ---------------------------------------------------------

@transaction.atomic
def kek_rotation_request(*, actor, tenant: Tenant, reason: str = "") -> KekRotation:
    ensure_tenant(tenant.pk, actor, "manage")
    if KekRotation.objects.filter(tenant=tenant, state__in=(KekRotationState.AWAITING_APPROVAL,
                                                             KekRotationState.RUNNING)).exists():
        raise ValidationError({"tenant": ["a KEK rotation of this tenant is already waiting or running"]})
    rotation = KekRotation.objects.create(tenant=tenant, requested_by=actor, reason=reason[:200])
    record_event(action="keys.kek_rotation_requested", actor=actor, tenant=tenant,
                 details={"rotation": rotation.pk, "reason": rotation.reason})
    return rotation


def kek_rotation_approve(*, actor, rotation: KekRotation) -> KekRotation:
    """A second admin approves; the rotation then runs in a worker (`keys.kek_rotation`)."""
    ensure_allowed(rotation, actor, "manage")
    refusal = ""
    with transaction.atomic():
        rotation = (KekRotation.objects.select_for_update(of=("self",)).select_related("tenant")
                    .get(pk=rotation.pk))
        if rotation.state != KekRotationState.AWAITING_APPROVAL:
            raise CampaignError(f"the KEK rotation is {rotation.state}")
        if rotation.requested_by_id == actor.pk:
            refusal = "the admin who asked for a KEK rotation cannot approve it; a second admin must"
        elif not _is_tenant_admin(actor, rotation.tenant_id):
            refusal = f"only an admin of tenant {rotation.tenant.slug} can approve its KEK rotation"
        else:
            rotation.state, rotation.approved_by, rotation.approved_at = (
                KekRotationState.RUNNING, actor, timezone.now())
            rotation.save(update_fields=["state", "approved_by", "approved_at"])
            record_event(action="keys.kek_rotation_approved", actor=actor, tenant=rotation.tenant,
                         details={"rotation": rotation.pk,
                                  "requested_by": rotation.requested_by.get_username()})
            from keys.tasks import kek_rotation

            transaction.on_commit(lambda: kek_rotation.delay(rotation.pk))
            return rotation
    with transaction.atomic():
        record_event(action="keys.kek_rotation_approval_refused", actor=actor, tenant=rotation.tenant,
                     result="refused", details={"rotation": rotation.pk, "reason": refusal})
    raise PermissionDenied(refusal)


def kek_rotation_run(*, rotation_id: int) -> KekRotation:
    rotation = KekRotation.objects.select_related("tenant", "approved_by").get(pk=rotation_id)
    if rotation.state != KekRotationState.RUNNING:
        return rotation
    try:
        report = services.tenant_kek_rotate(tenant=rotation.tenant, actor=rotation.approved_by)
    except KeystoreError as exc:
        KekRotation.objects.filter(pk=rotation.pk).update(state=KekRotationState.FAILED, error=str(exc)[:300],
                                                          finished_at=timezone.now())
        with transaction.atomic():
            record_event(action="keys.kek_rotation_failed", actor=None, tenant=rotation.tenant,
                         result="failure", details={"rotation": rotation.pk, "error": str(exc)[:300]})
    else:
        KekRotation.objects.filter(pk=rotation.pk).update(
            state=KekRotationState.DONE, kek_version=report.kek_version,
            blobs_rewrapped=report.blobs_rewrapped, finished_at=timezone.now())
    rotation.refresh_from_db()
    return rotation
