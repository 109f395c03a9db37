"""Alert and webhook fixtures: two tenants and their people, on the real OpenBao of tests.support.vault."""
from __future__ import annotations

import pytest

from tests.web.conftest import make_tenant, make_user, web_client  # noqa: F401


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
def auditor(acme):
    return make_user("audrey", [(acme, "auditor")])


@pytest.fixture
def operator(acme):
    return make_user("oscar", [(acme, "operator")])


@pytest.fixture
def other_admin(globex):
    return make_user("bob", [(globex, "admin")])


def api_client(user=None):
    from rest_framework.test import APIClient

    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client
