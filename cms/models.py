"""Who may act: tenant memberships with roles, and MES service accounts with API tokens."""
from __future__ import annotations

import hashlib
import hmac
import secrets

from django.conf import settings
from django.db import models
from django.utils import timezone


class Role(models.TextChoices):
    ADMIN = "admin", "Tenant admin"
    OPERATOR = "operator", "Operator"
    AUDITOR = "auditor", "Auditor"
    MES = "mes", "MES service account"


class Membership(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    tenant = models.ForeignKey("cards.Tenant", on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=[c for c in Role.choices if c[0] != Role.MES])
    created_at = models.DateTimeField(auto_now_add=True)

    tenant_path = "tenant"

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "tenant"], name="one_role_per_tenant")]

    def __str__(self) -> str:
        return f"{self.user} is {self.role} of {self.tenant}"


class ServiceAccount(models.Model):
    """A machine caller (a factory's MES) acting for exactly one tenant."""

    tenant = models.ForeignKey("cards.Tenant", on_delete=models.CASCADE, related_name="service_accounts")
    name = models.SlugField(max_length=80)
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MES)
    is_active = models.BooleanField(default=True)
    created_by = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    tenant_path = "tenant"

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="unique_service_account")]

    def __str__(self) -> str:
        return f"{self.tenant}/{self.name}"

    # DRF treats request.user as a user; these make a service account one.
    is_authenticated = True
    is_anonymous = False
    is_superuser = False
    is_staff = False

    @property
    def username(self) -> str:
        return f"svc:{self}"


TOKEN_PREFIX_LEN = 8


def token_digest(secret: str) -> str:
    """HMAC-SHA256 of the whole token, keyed with the server's pepper (never stored plain)."""
    return hmac.new(settings.API_TOKEN_PEPPER.encode(), secret.encode(), hashlib.sha256).hexdigest()


class ApiTokenManager(models.Manager):
    def issue(self, account: ServiceAccount, *, label: str = "", expires_at=None) -> tuple[ApiToken, str]:
        """Create a token; the plain token is returned once and never stored."""
        prefix = secrets.token_hex(TOKEN_PREFIX_LEN // 2)
        plain = f"cms_{prefix}_{secrets.token_urlsafe(32)}"
        token = self.create(account=account, prefix=prefix, digest=token_digest(plain),
                            label=label, expires_at=expires_at)
        return token, plain


class ApiToken(models.Model):
    account = models.ForeignKey(ServiceAccount, on_delete=models.CASCADE, related_name="tokens")
    prefix = models.CharField(max_length=TOKEN_PREFIX_LEN, unique=True)
    digest = models.CharField(max_length=64)
    label = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = ApiTokenManager()
    tenant_path = "account__tenant"

    def __str__(self) -> str:
        return f"cms_{self.prefix}_…"

    def matches(self, plain: str) -> bool:
        return hmac.compare_digest(self.digest, token_digest(plain))

    @property
    def usable(self) -> bool:
        now = timezone.now()
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now) \
            and self.account.is_active
