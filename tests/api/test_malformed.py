"""Malformed input found by the schemathesis run: each is a 400 naming the field, never a 500."""
from __future__ import annotations

import pytest

from tests.cards.fixtures import client_for, desfire_spec


@pytest.mark.parametrize("slug", ["ac\x00me", "acme/../globex", "", "x" * 51, 7])
def test_tenant_that_is_not_a_slug_is_a_400_naming_the_field(owner, masters, slug):
    # PostgreSQL refuses a NUL byte in a query parameter: before the fix this was a 500 there.
    response = client_for(owner).post("/api/v1/profiles/validate/", {"tenant": slug, "spec": desfire_spec()},
                                      format="json")
    assert response.status_code == 400
    assert list(response.json()) == ["tenant"]
