"""Who may act for a tenant: memberships (roles of people) and MES service accounts with their API tokens."""
from __future__ import annotations

from datetime import datetime

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from cards.models import Tenant
from cards.services.audit_log import record
from cms.models import ApiToken, Membership, Role, ServiceAccount
from cms.scoping import actor_name, ensure_allowed, ensure_tenant

SERVICE_ACCOUNT_ROLES = (Role.MES, Role.OPERATOR, Role.AUDITOR)  # a machine never administers a tenant


def _ensure_an_admin_remains(membership: Membership) -> None:
    others = Membership.objects.filter(tenant_id=membership.tenant_id, role=Role.ADMIN) \
        .exclude(pk=membership.pk)
    if membership.role == Role.ADMIN and not others.exists():
        raise ValidationError({"role": ["this is the tenant's last admin; grant another admin first"]})


@transaction.atomic
def membership_grant(*, actor, tenant: Tenant, user, role: str) -> Membership:
    ensure_tenant(tenant.pk, actor, "manage")
    if role not in (Role.ADMIN, Role.OPERATOR, Role.AUDITOR):
        raise ValidationError({"role": ["must be admin, operator or auditor"]})
    if Membership.objects.filter(tenant=tenant, user=user).exists():
        raise ValidationError({"user": ["already has a role in this tenant; change that membership instead"]})
    membership = Membership.objects.create(tenant=tenant, user=user, role=role)
    record("membership.granted", actor=actor, tenant=tenant,
           details={"user": user.get_username(), "role": role})
    return membership


@transaction.atomic
def membership_change(*, actor, membership: Membership, role: str) -> Membership:
    ensure_allowed(membership, actor, "manage")
    membership = Membership.objects.select_for_update().get(pk=membership.pk)
    if role not in (Role.ADMIN, Role.OPERATOR, Role.AUDITOR):
        raise ValidationError({"role": ["must be admin, operator or auditor"]})
    if role == membership.role:
        return membership
    if role != Role.ADMIN:
        _ensure_an_admin_remains(membership)
    before = membership.role
    membership.role = role
    membership.save(update_fields=["role"])
    record("membership.changed", actor=actor, tenant=membership.tenant,
           details={"user": membership.user.get_username(), "before": before, "after": role})
    return membership


@transaction.atomic
def membership_remove(*, actor, membership: Membership) -> None:
    ensure_allowed(membership, actor, "manage")
    membership = Membership.objects.select_for_update().get(pk=membership.pk)
    _ensure_an_admin_remains(membership)
    record("membership.removed", actor=actor, tenant=membership.tenant,
           details={"user": membership.user.get_username(), "role": membership.role})
    membership.delete()


@transaction.atomic
def service_account_create(*, actor, tenant: Tenant, name: str, role: str = Role.MES) -> ServiceAccount:
    ensure_tenant(tenant.pk, actor, "manage")
    if role not in SERVICE_ACCOUNT_ROLES:
        raise ValidationError({"role": ["must be mes, operator or auditor"]})
    if ServiceAccount.objects.filter(tenant=tenant, name=name).exists():
        raise ValidationError({"name": ["this tenant has a service account with this name"]})
    account = ServiceAccount(tenant=tenant, name=name, role=role, created_by=actor_name(actor))
    account.full_clean()
    account.save()
    record("service_account.created", actor=actor, tenant=tenant, details={"account": name, "role": role})
    return account


@transaction.atomic
def service_account_deactivate(*, actor, account: ServiceAccount) -> ServiceAccount:
    """Its tokens stop working at once (tokens check the account is active)."""
    ensure_allowed(account, actor, "manage")
    if account.is_active:
        account.is_active = False
        account.save(update_fields=["is_active"])
        record("service_account.deactivated", actor=actor, tenant=account.tenant,
               details={"account": account.name})
    return account


@transaction.atomic
def api_token_issue(*, actor, account: ServiceAccount, label: str = "",
                    expires_at: datetime | None = None) -> tuple[ApiToken, str]:
    """(token, plain): the plain token is returned this once; only its HMAC digest is stored."""
    ensure_allowed(account, actor, "manage")
    if not account.is_active:
        raise ValidationError({"account": ["the service account is deactivated"]})
    if expires_at is not None and expires_at <= timezone.now():
        raise ValidationError({"expires_at": ["must be in the future"]})
    token, plain = ApiToken.objects.issue(account, label=label, expires_at=expires_at)
    record("api_token.issued", actor=actor, tenant=account.tenant,
           details={"account": account.name, "prefix": token.prefix, "label": label,
                    "expires_at": expires_at.isoformat() if expires_at else None})
    return token, plain


@transaction.atomic
def api_token_revoke(*, actor, token: ApiToken) -> ApiToken:
    ensure_allowed(token, actor, "manage")
    token = ApiToken.objects.select_for_update().select_related("account__tenant").get(pk=token.pk)
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        record("api_token.revoked", actor=actor, tenant=token.account.tenant,
               details={"account": token.account.name, "prefix": token.prefix})
    return token
