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


@pytest.mark.parametrize("path", ["/api/v1/profiles/", "/api/v1/cards/", "/api/v1/profiles/validate/",
                                  "/api/v1/orders/", "/api/v1/webhooks/"])
def test_body_larger_than_the_server_reads_is_a_413_not_a_500(owner, masters, path):
    # 10 MB: Django refuses past DATA_UPLOAD_MAX_MEMORY_SIZE (RequestDataTooBig, unmapped: a 500 before).
    body = b'{"name": "' + b"x" * (10 * 1024 * 1024) + b'"}'
    response = client_for(owner).generic("POST", path, body, content_type="application/json",
                                         HTTP_IDEMPOTENCY_KEY="big-1")
    assert response.status_code == 413
    assert "larger than" in response.json()["detail"]


@pytest.mark.parametrize("depth", [33, 2000, 100_000])
@pytest.mark.parametrize("path", ["/api/v1/profiles/", "/api/v1/profiles/validate/", "/api/v1/cards/"])
def test_json_nested_too_deep_is_a_400_naming_the_limit(owner, masters, path, depth):
    # 100,000 levels exhausted the decoder's recursion (RecursionError: a 500 before).
    body = '{"tenant": "acme", "spec": ' + "[" * depth + "]" * depth + "}"
    response = client_for(owner).generic("POST", path, body, content_type="application/json")
    assert response.status_code == 400
    assert "nested deeper than 32" in response.json()["detail"]


def test_json_nested_within_the_limit_reaches_the_validator(owner, masters):
    body = '{"tenant": "acme", "name": "deep", "chip_family": "desfire", "spec": ' + "[" * 30 + "]" * 30 + "}"
    response = client_for(owner).generic("POST", "/api/v1/profiles/validate/", body,
                                         content_type="application/json")
    assert response.status_code in (200, 400)
    assert "nested deeper" not in response.content.decode()


@pytest.mark.parametrize(("kind", "aid"), [
    ("desfire", "XYZ123"),  # not hex
    ("desfire", "F0A00"),  # odd number of digits
    ("desfire", ""),  # empty
    ("desfire", "F0A00102"),  # DESFire AIDs are 3 bytes (was a 400 under non_field_errors)
    ("gp", "F0A001"),  # GlobalPlatform AIDs are 5..16 bytes
    ("gp", "A0" * 17),  # longer than 16 bytes
    ("desfire", 15770625),  # a number, read as the string "15770625" (4 bytes: was non_field_errors)
])
def test_wrong_aid_format_is_a_400_naming_the_aid_and_why(owner, masters, acme, kind, aid):
    from cards.models import Card

    chip_type = "desfire_ev3" if kind == "desfire" else "jcop4"
    card = Card.objects.create(tenant=acme, uid="04112233445566", chip_type=chip_type)
    response = client_for(owner).post("/api/v1/applications/", {"card": card.pk, "kind": kind, "aid": aid},
                                      format="json")
    assert response.status_code == 400, response.content
    body = response.json()
    assert list(body) == ["aid"] and body["aid"] and all(reason.strip() for reason in body["aid"])


@pytest.mark.parametrize(("spec", "path"), [
    ([], "spec"),  # not an object
    ("desfire", "spec"),
    ({"schema": 1}, "chip_family"),
    ({**desfire_spec(), "applications": "none"}, "applications"),
    ({**desfire_spec(), "applications": [{**desfire_spec()["applications"][0], "aid": "GG0001"}]},
     "applications[0].aid"),
    ({**desfire_spec(), "applications": [{**desfire_spec()["applications"][0], "aid": "F0A0011"}]},
     "applications[0].aid"),
])
def test_malformed_profile_is_a_400_naming_the_json_path_and_why(owner, masters, spec, path):
    response = client_for(owner).post("/api/v1/profiles/", {"name": "bad", "spec": spec}, format="json")
    assert response.status_code == 400, response.content
    errors = response.json()["spec"]
    assert isinstance(errors, dict | list), errors
    named = errors if isinstance(errors, dict) else {"spec": errors}
    assert path in named and all(str(reason).strip() for reason in named[path]), named
