"""Reads of key metadata (slots, versions, master keys), always scoped to what the caller may see."""
from __future__ import annotations

from django.db.models import Prefetch, QuerySet

from cms.scoping import restrict
from keys.models import KeySlot, KeyVersion, MasterKey, MasterKeyVersion


def master_methods_for(tenant) -> dict[str, str]:
    """The tenant's master keys by name -> diversification method (for profile validation)."""
    return dict(MasterKey.objects.filter(tenant=tenant).values_list("name", "method"))


def master_key_list(*, actor) -> QuerySet[MasterKey]:
    versions = MasterKeyVersion.objects.order_by("-number")
    return restrict(MasterKey.objects.select_related("tenant"), actor, "view") \
        .prefetch_related(Prefetch("versions", queryset=versions)).order_by("tenant__slug", "name")


def key_slot_list(*, actor, card_uid: str | None = None, aid: str | None = None) -> QuerySet[KeySlot]:
    qs = KeySlot.objects.select_related("tenant", "card", "application", "master")
    if card_uid:
        qs = qs.filter(card__uid=card_uid.upper())
    if aid:
        qs = qs.filter(application__aid=aid.upper())
    return restrict(qs, actor, "view").prefetch_related(
        Prefetch("versions", queryset=KeyVersion.objects.order_by("-number")))


def key_version_list(*, actor, slot_id: int | None = None, state: str | None = None) -> QuerySet[KeyVersion]:
    qs = KeyVersion.objects.select_related("slot", "slot__card", "slot__application", "master_version",
                                           "master_version__master")
    if slot_id is not None:
        qs = qs.filter(slot_id=slot_id)
    if state:
        qs = qs.filter(state=state)
    return restrict(qs, actor, "view")
