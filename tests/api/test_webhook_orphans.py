"""A webhook created after one whose creation rolled back gets a working secret (found by schemathesis:
the rolled-back row's id came free again and its orphan blob in Vault made the next creation a 500)."""
from __future__ import annotations

import pytest
from django.db import transaction

from cards.webhooks import webhook_endpoint_create
from tests.cards.fixtures import client_for


class RolledBack(Exception):
    pass


def test_creation_after_a_rolled_back_one_succeeds(owner, acme):
    with pytest.raises(RolledBack), transaction.atomic():
        webhook_endpoint_create(actor=owner, tenant=acme, url="https://mes.example/a",
                                events=["order.completed"])
        raise RolledBack
    response = client_for(owner).post("/api/v1/webhooks/", {"url": "https://mes.example/b",
                                                             "events": ["order.completed"]}, format="json")
    assert response.status_code == 201, response.content[:500]
