"""Two tenants (acme, globex) and their people, shared by the web, alert and webhook tests.

Every fixture runs on the real OpenBao of tests.support.vault (`vault`): the audit chain key and
the tenant KEKs live there. Users are created without a password (fast) unless a test signs in
through the login form. Import the fixtures into a conftest to use them.
"""
from __future__ import annotations

import pytest


def make_tenant(slug: str, prefix: str, first: int):
    from cards.models import Tenant

    return Tenant.objects.create(slug=slug, name=slug.title(), gp_aid_prefix=prefix,
                                 desfire_aid_first=first, desfire_aid_last=first + 0xFFF)


def make_user(username: str, memberships=(), password: str | None = None):
    from django.contrib.auth import get_user_model

    from cms.models import Membership

    user = get_user_model().objects.create_user(username=username, password=password)
    for tenant, role in memberships:
        Membership.objects.create(user=user, tenant=tenant, role=role)
    return user


@pytest.fixture
def acme(db, vault):
    return make_tenant("acme", "A00000061700CAFE0001", 0xF0A000)


@pytest.fixture
def globex(db, vault):
    return make_tenant("globex", "A00000061700BEEF0001", 0xF0B000)


@pytest.fixture
def admin(acme):
    return make_user("alice", [(acme, "admin")])


@pytest.fixture
def second_admin(acme):
    return make_user("carol", [(acme, "admin")])


@pytest.fixture
def operator(acme):
    return make_user("oscar", [(acme, "operator")])


@pytest.fixture
def auditor(acme):
    return make_user("audrey", [(acme, "auditor")])


@pytest.fixture
def other_admin(globex):
    """Admin of globex only: must see nothing of acme."""
    return make_user("bob", [(globex, "admin")])


def api_client(user=None):
    from rest_framework.test import APIClient

    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client
