"""A fresh instance's first run: the first superuser (random password in a 0600 file) and a demo tenant.

Used by `manage.py bootstrap` (and so by `bin/start`). Idempotent: it creates only what is
missing, and never prints or logs the password, only the path of the file that holds it.
"""
from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from django.contrib.auth import get_user_model
from django.db import transaction

from audit.services import record_event

DEMO_TENANT = {
    "slug": "demo",
    "name": "Demo tenant",
    # A Fidesmo-style GlobalPlatform prefix and a DESFire range kept for demonstrations.
    "gp_aid_prefix": "A00000061700DE000001",
    "desfire_aid_first": 0xF0D000,
    "desfire_aid_last": 0xF0DFFF,
}


@dataclass(frozen=True)
class BootstrapResult:
    admin_username: str
    admin_created: bool
    tenant_slug: str | None
    tenant_created: bool
    credentials_file: Path


def _write_credentials(path: Path, *, username: str, password: str, url: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(f"# The first admin of the CMS at {url}/admin/ (written once by manage.py bootstrap).\n"
                     "# Log in, change the password, then delete this file.\n"
                     f"username={username}\npassword={password}\n")
    os.replace(tmp, path)


@transaction.atomic
def instance_bootstrap(*, credentials_file: Path, url: str, username: str = "admin",
                       demo_tenant: bool = True) -> BootstrapResult:
    """Create the first superuser if there is none, and the demo tenant if there is no tenant.

    One transaction: if Vault is down (the tenant's KEK, the audit chain key), nothing is
    created and the next run tries again. The credentials file is written last, inside it.
    """
    from cards.models import Tenant
    from cards.services.access import membership_grant
    from cards.services.tenants import tenant_create

    users = get_user_model()
    admin = users.objects.filter(is_superuser=True, is_active=True).order_by("pk").first()
    password = None
    if admin is None:
        password = secrets.token_urlsafe(18)
        admin = users.objects.create_superuser(username=username, email="", password=password)
        record_event(action="user.superuser_created", actor_type="system", actor_name="bootstrap",
                     details={"user": username, "credentials_file": str(credentials_file)})

    tenant, tenant_created = None, False
    if demo_tenant and not Tenant.objects.exists():
        tenant = tenant_create(actor=admin, **DEMO_TENANT)
        membership_grant(actor=admin, tenant=tenant, user=admin, role="admin")
        tenant_created = True

    if password is not None:
        _write_credentials(credentials_file, username=admin.get_username(), password=password, url=url)
    return BootstrapResult(admin_username=admin.get_username(), admin_created=password is not None,
                           tenant_slug=tenant.slug if tenant else None, tenant_created=tenant_created,
                           credentials_file=credentials_file)
