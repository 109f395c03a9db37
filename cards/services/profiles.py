"""Card profiles: created as new versions after validation against the tenant; never edited in place."""
from __future__ import annotations

from django.db import transaction
from django.db.models import Max

from cards.models import CardProfile, Tenant
from cards.profiles import ProfileSpecError, check_spec, validate_spec
from cards.services.audit_log import record
from cms.scoping import actor_name, ensure_allowed, ensure_tenant
from keys.selectors import master_methods_for


def profile_validate(*, actor, tenant: Tenant, spec) -> dict[str, list[str]]:
    """A dry run: the spec's errors for this tenant, without saving anything."""
    ensure_tenant(tenant.pk, actor, "manage")
    return validate_spec(spec, tenant=tenant, master_methods=master_methods_for(tenant))


@transaction.atomic
def profile_create(*, actor, tenant: Tenant, name: str, spec: dict, description: str = "") -> CardProfile:
    """A new profile, or the next version of the profile of that name."""
    ensure_tenant(tenant.pk, actor, "manage")
    # Lock the tenant row: versions of one name are numbered one after the other.
    tenant = Tenant.objects.select_for_update().get(pk=tenant.pk)
    check_spec(spec, tenant=tenant, master_methods=master_methods_for(tenant))
    latest = CardProfile.objects.filter(tenant=tenant, name=name).aggregate(v=Max("version"))["v"] or 0
    profile = CardProfile.objects.create(tenant=tenant, name=name, version=latest + 1,
                                         chip_family=spec["chip_family"], description=description, spec=spec,
                                         created_by=actor_name(actor))
    record("profile.created", actor=actor, tenant=tenant,
           details={"profile": profile.name, "version": profile.version, "chip_family": profile.chip_family})
    return profile


@transaction.atomic
def profile_deactivate(*, actor, profile: CardProfile) -> CardProfile:
    """New orders can no longer use it; cards provisioned with it keep pointing at it."""
    ensure_allowed(profile, actor, "manage")
    if profile.is_active:
        profile.is_active = False
        profile.save(update_fields=["is_active"])
        record("profile.deactivated", actor=actor, tenant=profile.tenant,
               details={"profile": profile.name, "version": profile.version})
    return profile


__all__ = ["ProfileSpecError", "profile_create", "profile_deactivate", "profile_validate"]
