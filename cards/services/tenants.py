"""Tenants and their AID namespaces: created and edited by superusers only, never overlapping."""
from __future__ import annotations

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection, transaction

from cards.models import Application, Tenant
from cards.models.cards import AppKind
from cards.profiles import SYSTEM_AIDS
from cards.services.audit_log import record
from cards.validators import normalise_hex, validate_gp_aid

# Any fixed number: it names the lock that serialises namespace checks on PostgreSQL.
_NAMESPACE_LOCK = 0x43_4D_53_01


def _ensure_superuser(actor) -> None:
    if not getattr(actor, "is_superuser", False):
        raise PermissionDenied("only superusers create or edit tenants")


def _lock_namespaces() -> None:
    # Two concurrent creations must not both pass the overlap check; SQLite serialises writers.
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_NAMESPACE_LOCK])


def tenant_namespace_errors(*, gp_aid_prefix: str, desfire_aid_first: int, desfire_aid_last: int,
                            exclude_pk: int | None = None) -> dict[str, list[str]]:
    """Why this namespace cannot be given to a tenant (empty when it can)."""
    errors: dict[str, list[str]] = {}
    prefix = gp_aid_prefix.upper()
    if desfire_aid_first > desfire_aid_last:
        errors["desfire_aid_last"] = ["must not be below desfire_aid_first"]
    for system in SYSTEM_AIDS:
        if system.startswith(prefix) or prefix.startswith(system):
            errors.setdefault("gp_aid_prefix", []).append(f"overlaps the JCOP system AID {system}")
    others = Tenant.objects.exclude(pk=exclude_pk) if exclude_pk else Tenant.objects.all()
    for other in others.only("slug", "gp_aid_prefix", "desfire_aid_first", "desfire_aid_last"):
        theirs = other.gp_aid_prefix.upper()
        if theirs.startswith(prefix) or prefix.startswith(theirs):
            errors.setdefault("gp_aid_prefix", []).append(
                f"overlaps tenant {other.slug}'s GlobalPlatform AID prefix {theirs}")
        if desfire_aid_first <= other.desfire_aid_last and other.desfire_aid_first <= desfire_aid_last:
            errors.setdefault("desfire_aid_first", []).append(
                f"range intersects tenant {other.slug}'s DESFire AIDs "
                f"{other.desfire_aid_first:06X}-{other.desfire_aid_last:06X}")
    return errors


def _ensure_kek(tenant: Tenant, actor) -> None:
    # In this transaction: a Vault outage rolls the tenant back (API 503) and never leaves a
    # tenant without its KEK. (A KEK left behind by a later rollback wraps nothing.)
    from keys.services import tenant_kek_ensure

    tenant_kek_ensure(tenant=tenant, actor=actor)


@transaction.atomic
def tenant_create(*, actor, slug: str, name: str, gp_aid_prefix: str, desfire_aid_first: int,
                  desfire_aid_last: int, is_active: bool = True) -> Tenant:
    _ensure_superuser(actor)
    gp_aid_prefix = normalise_hex(gp_aid_prefix)
    validate_gp_aid(gp_aid_prefix)
    _lock_namespaces()
    errors = tenant_namespace_errors(gp_aid_prefix=gp_aid_prefix, desfire_aid_first=desfire_aid_first,
                                     desfire_aid_last=desfire_aid_last)
    if Tenant.objects.filter(slug=slug).exists():
        errors["slug"] = ["a tenant with this slug exists"]
    if errors:
        raise ValidationError(errors)
    tenant = Tenant(slug=slug, name=name, gp_aid_prefix=gp_aid_prefix, desfire_aid_first=desfire_aid_first,
                    desfire_aid_last=desfire_aid_last, is_active=is_active)
    tenant.full_clean()
    tenant.save()
    _ensure_kek(tenant, actor)
    record("tenant.created", actor=actor, tenant=tenant,
           details={"gp_aid_prefix": gp_aid_prefix,
                    "desfire_aids": f"{desfire_aid_first:06X}-{desfire_aid_last:06X}"})
    return tenant


@transaction.atomic
def tenant_update(*, actor, tenant: Tenant, name: str | None = None, gp_aid_prefix: str | None = None,
                  desfire_aid_first: int | None = None, desfire_aid_last: int | None = None,
                  is_active: bool | None = None) -> Tenant:
    _ensure_superuser(actor)
    tenant = Tenant.objects.select_for_update().get(pk=tenant.pk)
    before = {"name": tenant.name, "gp_aid_prefix": tenant.gp_aid_prefix,
              "desfire_aid_first": tenant.desfire_aid_first, "desfire_aid_last": tenant.desfire_aid_last,
              "is_active": tenant.is_active}
    if name is not None:
        tenant.name = name
    if is_active is not None:
        tenant.is_active = is_active
    if gp_aid_prefix is not None:
        tenant.gp_aid_prefix = normalise_hex(gp_aid_prefix)
        validate_gp_aid(tenant.gp_aid_prefix)
    if desfire_aid_first is not None:
        tenant.desfire_aid_first = desfire_aid_first
    if desfire_aid_last is not None:
        tenant.desfire_aid_last = desfire_aid_last
    _lock_namespaces()
    errors = tenant_namespace_errors(gp_aid_prefix=tenant.gp_aid_prefix,
                                     desfire_aid_first=tenant.desfire_aid_first,
                                     desfire_aid_last=tenant.desfire_aid_last, exclude_pk=tenant.pk)
    if not errors:
        errors = _applications_left_outside(tenant)
    if errors:
        raise ValidationError(errors)
    tenant.full_clean()
    tenant.save()
    after = {key: getattr(tenant, key) for key in before}
    changed = {key: {"before": before[key], "after": after[key]}
               for key in before if before[key] != after[key]}
    if changed:
        record("tenant.updated", actor=actor, tenant=tenant, details={"changed": changed})
    return tenant


def _applications_left_outside(tenant: Tenant) -> dict[str, list[str]]:
    """A namespace may shrink only around the applications the tenant already has."""
    errors: dict[str, list[str]] = {}
    for kind, aid in Application.objects.filter(tenant=tenant).values_list("kind", "aid").distinct():
        if kind == AppKind.DESFIRE and not tenant.owns_desfire_aid(aid):
            errors.setdefault("desfire_aid_first", []).append(f"application {aid} would fall outside")
        elif kind == AppKind.GP and not tenant.owns_gp_aid(aid):
            errors.setdefault("gp_aid_prefix", []).append(f"application {aid} would fall outside")
    return errors
