"""The OpenAPI schema at /api/schema/ and the docs UI beside it describe every route of /api/v1/."""
from __future__ import annotations

import pytest

from cms.api_urls import router
from tests.cards.fixtures import client_for

pytestmark = pytest.mark.django_db


def test_schema_is_openapi_3_and_names_every_route():
    response = client_for(None).get("/api/schema/?format=json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    described = {path.split("/")[3] for path in schema["paths"] if path.startswith("/api/v1/")}
    assert described == {prefix for prefix, _viewset, _basename in router.registry}
    assert "Idempotency-Key" in str(schema["paths"]["/api/v1/orders/"]["post"])


def test_docs_ui_is_served_beside_the_schema():
    response = client_for(None).get("/api/docs/")
    assert response.status_code == 200
    assert b"/api/schema/" in response.content and b"swagger" in response.content.lower()
