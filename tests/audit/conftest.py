"""Audit test fixtures: a real OpenBao for the chain key, users in two tenants."""
from __future__ import annotations

import pytest
from django.test import override_settings

from audit.chainkey import forget_chain_key
from tests.audit.vaultserver import ROOT_TOKEN, DevVault


@pytest.fixture(scope="session")
def audit_vault():
    vault = DevVault().start()
    override = override_settings(VAULT_ADDR=vault.addr, VAULT_TOKEN=ROOT_TOKEN, VAULT_ROLE_ID="")
    override.enable()
    forget_chain_key()
    try:
        yield vault
    finally:
        override.disable()
        forget_chain_key()
        vault.stop()


@pytest.fixture(autouse=True)
def _chain_key_from_test_vault(audit_vault):
    yield


@pytest.fixture
def tenant(db):
    from cards.models import Tenant

    return Tenant.objects.create(slug="acme", name="Acme", gp_aid_prefix="A00000061700CAFE0001",
                                 desfire_aid_first=0x100000, desfire_aid_last=0x10FFFF)


@pytest.fixture
def other_tenant(db):
    from cards.models import Tenant

    return Tenant.objects.create(slug="globex", name="Globex", gp_aid_prefix="A00000061700BEEF0001",
                                 desfire_aid_first=0x200000, desfire_aid_last=0x20FFFF)
