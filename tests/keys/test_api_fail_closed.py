"""An endpoint that needs Vault answers 503 while Vault is sealed or unreachable, and changes nothing."""
from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from cards.models import Tenant
from keys import keystore
from tests.support.vault import _free_port_pair

pytestmark = [pytest.mark.vault, pytest.mark.django_db]
NEW_TENANT = {"slug": "initech", "name": "Initech", "gp_aid_prefix": "A00000061700ABCD0001",
              "desfire_aid_first": 0x300000, "desfire_aid_last": 0x30FFFF}


@pytest.fixture
def superuser_client(db):
    user = get_user_model().objects.create_superuser("root-admin", "root@example.com", "x" * 16)
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def tenant_admin_client(tenant):
    from cms.models import Membership

    user = get_user_model().objects.create_user("acme-admin", "a@example.com", "x" * 16)
    Membership.objects.create(user=user, tenant=tenant, role="admin")
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_creating_a_tenant_creates_its_kek(vault, superuser_client):
    response = superuser_client.post("/api/v1/tenants/", NEW_TENANT, format="json")
    assert response.status_code == 201
    assert keystore.kek_info(response.json()["id"])["type"] == "aes256-gcm96"


def test_creating_a_tenant_while_vault_is_sealed_is_503_and_leaves_no_tenant(vault, superuser_client):
    vault.seal()
    response = superuser_client.post("/api/v1/tenants/", NEW_TENANT, format="json")
    assert response.status_code == 503
    assert "sealed" in response.json()["detail"]
    assert not Tenant.objects.filter(slug="initech").exists()


def test_creating_a_tenant_while_vault_is_unreachable_is_503(vault, settings, superuser_client):
    from cms import vault as cms_vault

    settings.VAULT_ADDR = f"http://127.0.0.1:{_free_port_pair()}"
    cms_vault.reset_client()
    response = superuser_client.post("/api/v1/tenants/", NEW_TENANT, format="json")
    assert response.status_code == 503
    assert not Tenant.objects.filter(slug="initech").exists()


def test_a_tenant_admin_cannot_create_tenants_or_keks(vault, tenant_admin_client):
    response = tenant_admin_client.post("/api/v1/tenants/", NEW_TENANT, format="json")
    assert response.status_code == 403
    assert not Tenant.objects.filter(slug="initech").exists()


def test_an_anonymous_caller_cannot_create_tenants(vault):
    response = APIClient().post("/api/v1/tenants/", NEW_TENANT, format="json")
    assert response.status_code in (401, 403)
    assert not Tenant.objects.filter(slug="initech").exists()
