"""`manage.py bootstrap`: the first superuser and a demo tenant, once; the password only in a 0600 file."""
from __future__ import annotations

import io
import stat

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from audit.models import AuditEvent
from cards.models import Tenant
from cms.models import Membership

pytestmark = [pytest.mark.vault, pytest.mark.django_db]


def _bootstrap(path) -> str:
    out = io.StringIO()
    call_command("bootstrap", "--credentials-file", str(path), "--url", "http://cms.test", stdout=out)
    return out.getvalue()


def test_first_run_creates_admin_and_demo_tenant_and_writes_credentials_privately(vault, tmp_path):
    path = tmp_path / "admin-credentials"
    output = _bootstrap(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    creds = dict(line.split("=", 1) for line in path.read_text().splitlines() if not line.startswith("#"))
    assert creds["password"] not in output and str(path) in output
    admin = get_user_model().objects.get(username=creds["username"])
    assert admin.is_superuser and admin.is_staff and admin.check_password(creds["password"])
    demo = Tenant.objects.get(slug="demo")
    assert Membership.objects.get(user=admin, tenant=demo).role == "admin"
    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {"user.superuser_created", "tenant.created", "membership.granted"} <= actions
    assert creds["password"] not in str(list(AuditEvent.objects.values()))


def test_second_run_changes_nothing(vault, tmp_path):
    path = tmp_path / "admin-credentials"
    _bootstrap(path)
    written = path.read_text()
    events = AuditEvent.objects.count()
    assert "nothing to do" in _bootstrap(path)
    assert path.read_text() == written
    assert get_user_model().objects.count() == 1 and Tenant.objects.count() == 1
    assert AuditEvent.objects.count() == events


def test_without_vault_nothing_is_created(vault, tmp_path):
    from audit.chainkey import forget_chain_key

    vault.seal()
    forget_chain_key()
    with pytest.raises(CommandError, match="bootstrap needs Vault"):
        _bootstrap(tmp_path / "admin-credentials")
    assert not get_user_model().objects.exists() and not Tenant.objects.exists()
    assert not (tmp_path / "admin-credentials").exists()
