"""Key test fixtures: two tenants, a DESFire card and a JCOP card with key slots, Vault from tests.support."""
from __future__ import annotations

import pytest


def _tenant(slug: str, prefix: str, first: int):
    from cards.models import Tenant

    return Tenant.objects.create(slug=slug, name=slug.title(), gp_aid_prefix=prefix,
                                 desfire_aid_first=first, desfire_aid_last=first + 0xFFFF)


@pytest.fixture
def tenant(db):
    return _tenant("acme", "A00000061700CAFE0001", 0x100000)


@pytest.fixture
def other_tenant(db):
    return _tenant("globex", "A00000061700BEEF0001", 0x200000)


@pytest.fixture
def desfire_card(tenant):
    from cards.models import Card

    return Card.objects.create(tenant=tenant, uid="04782E21801D80", chip_type="desfire_ev2")


@pytest.fixture
def desfire_app(desfire_card):
    from cards.models import Application

    return Application.objects.create(card=desfire_card, tenant=desfire_card.tenant, kind="desfire",
                                      aid="100001", num_keys=3)


@pytest.fixture
def desfire_slots(desfire_card, desfire_app):
    """PICC master key plus the application's master key and two file keys."""
    from keys.models import KeySlot

    tenant = desfire_card.tenant
    slots = [KeySlot.objects.create(tenant=tenant, card=desfire_card, role="cmk", key_no=0)]
    slots.append(KeySlot.objects.create(tenant=tenant, card=desfire_card, application=desfire_app,
                                        role="amk", key_no=0))
    for key_no in (1, 2):
        slots.append(KeySlot.objects.create(tenant=tenant, card=desfire_card, application=desfire_app,
                                            role="app_key", key_no=key_no))
    return slots


@pytest.fixture
def jcop_card(tenant):
    from cards.models import Card

    # 10-byte UID 00..09: the KDD GlobalPlatformPro's published KDF3 KCVs use
    return Card.objects.create(tenant=tenant, uid="00010203040506070809", chip_type="jcop4")


@pytest.fixture
def isd_slots(jcop_card):
    from keys.models import KeySlot

    return [KeySlot.objects.create(tenant=jcop_card.tenant, card=jcop_card, role=role, key_no=key_no,
                                   policy="diversified")
            for role, key_no in (("isd_enc", 1), ("isd_mac", 2), ("isd_dek", 3))]


@pytest.fixture
def vault_calls(monkeypatch):
    """Records every Vault API request the code makes (method, path); the requests still go to OpenBao."""
    from cms import vault as cms_vault

    calls: list[tuple[str, str]] = []
    real = cms_vault.call

    def recording(method, path, body=None, *, what):
        calls.append((method, path))
        return real(method, path, body, what=what)

    monkeypatch.setattr(cms_vault, "call", recording)
    return calls
