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


# Found by the schemathesis run (tests/api/test_schemathesis.py) and fixed: each a 4xx naming the parameter.

@pytest.mark.parametrize(("path", "field"), [
    ("/api/v1/jobs/?card_uid=04%00112233", "card_uid"),  # a NUL byte: a 500 on PostgreSQL before the fix
    ("/api/v1/cards/?uid=not-hex", "uid"),
    ("/api/v1/cards/?state=burning", "state"),
    ("/api/v1/applications/?card_uid=", "card_uid"),
    ("/api/v1/files/?application=abc", "application"),
    ("/api/v1/orders/?state=", "state"),
    ("/api/v1/jobs/?order=1.5", "order"),
    ("/api/v1/profiles/?active=maybe", "active"),
    ("/api/v1/api-tokens/?account=-1", "account"),
    ("/api/v1/key-slots/?aid=ABC", "aid"),
    ("/api/v1/key-versions/?slot=null", "slot"),
    ("/api/v1/audit-events/?action=", "action"),
    ("/api/v1/cards/?limit=null", "limit"),
    ("/api/v1/cards/?limit=0", "limit"),
    ("/api/v1/stations/?offset=-1", "offset"),
    ("/api/v1/audit-events/?offset=abc", "offset"),
])
def test_bad_list_filter_or_page_is_a_400_naming_the_parameter(owner, masters, path, field):
    # Before: silently ignored (the whole list came back), which the schema's types forbid.
    response = client_for(owner).get(path)
    assert response.status_code == 400, response.content
    assert list(response.json()) == [field]


@pytest.mark.parametrize("path", ["/api/v1/cards/1.5/", "/api/v1/nothing-here/", "/api/v1/jobs/a/b/c/"])
def test_path_no_api_route_matches_is_a_json_404(owner, masters, path):
    # Before: Django's HTML page (a content type the schema does not document for the API).
    response = client_for(owner).get(path)
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "Not found."}


def test_good_list_filters_and_pages_still_filter(owner, masters, acme):
    from cards.models import Card

    Card.objects.create(tenant=acme, uid="04112233445566", chip_type="desfire_ev3")
    client = client_for(owner)
    assert client.get("/api/v1/cards/?uid=04112233445566&state=new&limit=1&offset=0").json()["count"] == 1
    assert client.get("/api/v1/cards/?uid=04aabbccddeeff").json()["count"] == 0
    assert client.get("/api/v1/cards/?uid=04112233445566").json()["count"] == 1
    assert client.get("/api/v1/profiles/?active=true").status_code == 200
    assert client.get("/api/v1/cards/?limit=100000").status_code == 200  # capped at max_limit, as before
