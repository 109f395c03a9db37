"""When the audit chain key cannot be read, an API write answers 503 and changes nothing."""
from __future__ import annotations

import pytest
from django.test import override_settings
from rest_framework.test import APIRequestFactory

from audit.chainkey import forget_chain_key
from audit.errors import AuditUnavailable
from cms.api import exception_handler


def test_audit_unavailable_becomes_503_without_internals():
    request = APIRequestFactory().post("/api/v1/anything/")
    response = exception_handler(AuditUnavailable("audit chain key unavailable from Vault: ConnectionError"),
                                 {"request": request, "view": None})
    assert response.status_code == 503
    assert response.data["detail"] == "audit chain key unavailable from Vault: ConnectionError"


@pytest.mark.django_db
def test_membership_grant_over_the_api_is_refused_with_503_when_vault_is_down(tenant):
    from django.contrib.auth import get_user_model
    from rest_framework.test import APIClient

    from cms.models import Membership

    root = get_user_model().objects.create_superuser("root", password="not-used-in-tests-0")
    bob = get_user_model().objects.create_user("bob", password="not-used-in-tests-0")
    client = APIClient()
    client.force_authenticate(root)
    forget_chain_key()
    try:
        with override_settings(VAULT_ADDR="http://127.0.0.1:9"):
            body = {"tenant": "acme", "username": "bob", "role": "operator"}
            response = client.post("/api/v1/memberships/", body, format="json")
    finally:
        forget_chain_key()
    assert response.status_code == 503, response.content
    assert not Membership.objects.filter(user=bob).exists()
