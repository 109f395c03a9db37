"""Shared fixtures for the card-side and API tests: a real OpenBao, two tenants, their people and machines."""
from __future__ import annotations

import pytest
import requests
from django.test import override_settings
from rest_framework.test import APIClient

from audit.chainkey import forget_chain_key
from tests.audit.vaultserver import ROOT_TOKEN, DevVault

ACME_GP_PREFIX = "A00000061700CAFE0001"
GLOBEX_GP_PREFIX = "A00000061700BEEF0001"


@pytest.fixture(scope="session")
def cards_vault():
    """OpenBao dev server with Transit (tenant KEKs) and KV v2 (audit chain key)."""
    vault = DevVault().start()
    response = requests.post(f"{vault.addr}/v1/sys/mounts/transit", json={"type": "transit"},
                             headers={"X-Vault-Token": ROOT_TOKEN}, timeout=5)
    response.raise_for_status()
    override = override_settings(VAULT_ADDR=vault.addr, VAULT_TOKEN=ROOT_TOKEN, VAULT_ROLE_ID="",
                                 VAULT_TRANSIT_MOUNT="transit", VAULT_KV_MOUNT="secret")
    override.enable()
    forget_chain_key()
    try:
        yield vault
    finally:
        override.disable()
        forget_chain_key()
        vault.stop()


@pytest.fixture(autouse=True)
def vault_for_audit(cards_vault):
    yield


@pytest.fixture
def acme(db):
    from cards.models import Tenant

    return Tenant.objects.create(slug="acme", name="Acme", gp_aid_prefix=ACME_GP_PREFIX,
                                 desfire_aid_first=0xF0A000, desfire_aid_last=0xF0AFFF)


@pytest.fixture
def globex(db):
    from cards.models import Tenant

    return Tenant.objects.create(slug="globex", name="Globex", gp_aid_prefix=GLOBEX_GP_PREFIX,
                                 desfire_aid_first=0xF0B000, desfire_aid_last=0xF0BFFF)


def _user(username: str, tenant=None, role: str | None = None, **extra):
    from django.contrib.auth import get_user_model

    from cms.models import Membership

    user = get_user_model().objects.create_user(username=username, password=None, **extra)  # unhashed: fast
    if tenant is not None:
        Membership.objects.create(user=user, tenant=tenant, role=role)
    return user


@pytest.fixture
def owner(acme):
    """Admin of acme: the owner in every access test."""
    return _user("alice", acme, "admin")


@pytest.fixture
def operator(acme):
    return _user("oscar", acme, "operator")


@pytest.fixture
def auditor(acme):
    return _user("audrey", acme, "auditor")


@pytest.fixture
def member_of_other(globex):
    """Admin of globex: sees nothing of acme."""
    return _user("bob", globex, "admin")


@pytest.fixture
def outsider(db):
    return _user("eve")


@pytest.fixture
def superuser(db):
    return _user("root", is_superuser=True, is_staff=True)


def client_for(user=None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_login(user)
    return client


@pytest.fixture
def mes_account(acme):
    from cms.models import ServiceAccount

    return ServiceAccount.objects.create(tenant=acme, name="mes-line-4")


@pytest.fixture
def mes_client(mes_account) -> APIClient:
    from cms.models import ApiToken

    _, plain = ApiToken.objects.issue(mes_account, label="tests")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {plain}")
    return client


@pytest.fixture
def masters(acme, globex):
    """Master keys by name (metadata only: the validator needs names and methods)."""
    from keys.models import MasterKey

    return {
        "cmk-master": MasterKey.objects.create(tenant=acme, name="cmk-master", method="an10922"),
        "amk-master": MasterKey.objects.create(tenant=acme, name="amk-master", method="an10922"),
        "isd-master": MasterKey.objects.create(tenant=acme, name="isd-master", method="kdf3"),
        "gp-test-key": MasterKey.objects.create(tenant=acme, name="gp-test-key", method="kdf3"),
        "globex-master": MasterKey.objects.create(tenant=globex, name="globex-master", method="an10922"),
    }


def desfire_spec(**overrides) -> dict:
    """Seed 003's flow: CMK per card, one application with an AMK and a read key, three file kinds."""
    spec = {
        "schema": 1, "chip_family": "desfire",
        "picc": {"master_key": {"policy": "diversified", "master": "cmk-master", "key_type": "aes128"},
                 "key_settings": 15},
        "applications": [{
            "aid": "F0A001", "key_settings": 11, "key_type": "aes128", "num_keys": 3,
            "keys": [{"key_no": 0, "role": "amk", "policy": "diversified", "master": "amk-master"},
                     {"key_no": 1, "role": "read", "policy": "random"},
                     {"key_no": 2, "role": "write", "policy": "random"}],
            "files": [
                {"file_no": 1, "type": "standard", "comm_mode": "full",
                 "access": {"read": 1, "write": 2, "read_write": 0, "change": 0}, "size": 32,
                 "initial_data_hex": "00112233"},
                {"file_no": 2, "type": "value", "comm_mode": "full",
                 "access": {"read": 1, "write": 2, "read_write": 0, "change": 0},
                 "lower_limit": 0, "upper_limit": 100000, "initial_value": 0, "limited_credit": False},
                {"file_no": 3, "type": "linear_record", "comm_mode": "mac",
                 "access": {"read": 1, "write": 2, "read_write": 0, "change": 0},
                 "record_size": 16, "max_records": 10},
            ]}],
    }
    spec.update(overrides)
    return spec


def jcop_spec(**overrides) -> dict:
    """Seed 002's flow: SCP03 with the transport keys, new diversified ISD keys, STORE DATA, lock."""
    spec = {
        "schema": 1, "chip_family": "jcop",
        "isd": {"aid": "A000000151000000", "scp": "scp03", "security_level": 51,
                "transport_keys": {"master": "gp-test-key", "kvn": 48},
                "new_keys": {"kvn": 49, "policy": "diversified", "master": "isd-master", "method": "kdf3"}},
        "store_data": [{"dgi": "0101", "data_hex": "F1E2D3"}],
        "lock": True,
    }
    spec.update(overrides)
    return spec
