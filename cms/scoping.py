"""The one place that decides what a caller may see and change: every queryset goes through here.

An *actor* is a Django user (with tenant memberships and roles), an MES service account
(one tenant) or a station (its own jobs only). `restrict(queryset, actor, action)` filters
any model that declares `tenant_path` (the lookup from the model to its Tenant) to the tenants
where the actor holds a role allowed to do `action`. Writes re-check the target against the
restricted queryset before commit (see `ensure_allowed`).
"""
from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.db.models import Model, QuerySet

from cms.models import Membership, Role, ServiceAccount

# Which roles may do what. "view" covers reads; the rest are writes.
ACTION_ROLES: dict[str, set[str]] = {
    "view": {Role.ADMIN, Role.OPERATOR, Role.AUDITOR, Role.MES},
    "view_audit": {Role.ADMIN, Role.AUDITOR},
    "operate": {Role.ADMIN, Role.OPERATOR, Role.MES},  # orders, card presentation
    "manage": {Role.ADMIN},  # tenants, profiles, stations, keys, memberships
}


def tenant_ids(actor, action: str = "view") -> list[int] | None:
    """Tenant ids where `actor` may do `action`; None means every tenant (superuser)."""
    roles = ACTION_ROLES[action]
    if actor is None or not getattr(actor, "is_authenticated", False):
        return []
    if isinstance(actor, ServiceAccount):
        return [actor.tenant_id] if actor.is_active and actor.role in roles else []
    if getattr(actor, "is_superuser", False):
        return None
    return list(Membership.objects.filter(user=actor, role__in=roles).values_list("tenant_id", flat=True))


def restrict(queryset: QuerySet, actor, action: str = "view") -> QuerySet:
    path = getattr(queryset.model, "tenant_path", None)
    if path is None:
        raise TypeError(f"{queryset.model.__name__} declares no tenant_path and cannot be scoped")
    allowed = tenant_ids(actor, action)
    if allowed is None:
        return queryset
    return queryset.filter(**{f"{path}__in" if path != "id" else "id__in": allowed})


def ensure_allowed(instance: Model, actor, action: str) -> None:
    """Re-check a single object (about to be written) against the restricted queryset."""
    model = type(instance)
    if not restrict(model._default_manager.filter(pk=instance.pk), actor, action).exists():
        raise PermissionDenied(f"not allowed to {action} this {model._meta.verbose_name}")


def ensure_tenant(tenant_id: int, actor, action: str) -> None:
    allowed = tenant_ids(actor, action)
    if allowed is not None and tenant_id not in allowed:
        raise PermissionDenied(f"not allowed to {action} in this tenant")


def actor_name(actor) -> str:
    if actor is None or not getattr(actor, "is_authenticated", False):
        return "anonymous"
    if isinstance(actor, ServiceAccount):
        return actor.username
    return actor.get_username()


def actor_type(actor) -> str:
    if isinstance(actor, ServiceAccount):
        return "service"
    return "user"
