"""Property-based run over the whole OpenAPI schema: no input makes a server error or breaks the schema.

Schemathesis drives the Django WSGI app in process, as a real tenant admin, once with an API token and once
with a session (with its CSRF token). The operations are split into shards (one test each, so xdist spreads
them); every shard runs schema-valid cases (positive) with every response check, then schema-invalid cases
(negative) that must be refused with a documented 4xx. The default run tries well over 1,000 cases;
raise SCHEMATHESIS_EXAMPLES / SCHEMATHESIS_NEGATIVE_EXAMPLES to dig deeper. The figures go to
test-artifacts/proof/ (`bench/proof_report.py` prints them).
"""
from __future__ import annotations

import collections
import os
import secrets
import string

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from django.test import Client
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from cms.models import ApiToken, ServiceAccount
from tests.api.test_access import world  # noqa: F401 - one object of every kind, so bodies get checked
from tests.support.proof import record

EXAMPLES = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "10"))
NEGATIVE_EXAMPLES = int(os.environ.get("SCHEMATHESIS_NEGATIVE_EXAMPLES", "5"))
# {id} operations once more with the id of a real object (random ids only ever find 404s, whose bodies
# say nothing about the object's schema).
REAL_OBJECT_EXAMPLES = int(os.environ.get("SCHEMATHESIS_REAL_OBJECT_EXAMPLES", "5"))
SHARDS = 3
CONFORMANCE = [not_a_server_error, status_code_conformance, content_type_conformance,
               response_schema_conformance, response_headers_conformance]
CHECKS = {GenerationMode.POSITIVE: CONFORMANCE,
          # invalid input: refused with a documented 4xx whose body and headers still match the schema
          GenerationMode.NEGATIVE: [*CONFORMANCE, negative_data_rejection]}
# Violations this run found (once it checked every response and sent invalid input too) and the product
# fixed; regressions in tests/api/test_malformed.py. Figures for bench/proof_report.py.
FOUND_AND_FIXED = [
    "server error: GET /api/v1/jobs/?card_uid=<NUL byte> was a 500 on PostgreSQL (filters now validated)",
    "undocumented content type: a path no API route matches (e.g. /api/v1/cards/1.5/, 36 {id} operations) "
    "answered Django's HTML 404 (now JSON, cms.api.not_found)",
    "invalid request accepted: limit/offset not a whole number (null, abc, 0, -1) silently ignored on every "
    "list (now 400 naming the parameter)",
    "invalid request accepted: list filters of the wrong type or format (state not in the enum, order/slot/"
    "account/application not an id, uid/aid not hex, empty strings) silently ignored on 11 lists "
    "(now 400 naming the filter)",
    "invalid request accepted: POST /api/v1/cards/ atr \"\" matched both branches of the schema's oneOf "
    "(pattern {0,33} | blank); the pattern is now 1..33 bytes",
]
FOUND_AND_FIXED_FIGURE = f"{len(FOUND_AND_FIXED)} kinds (listed under fixed)"


@pytest.fixture
def admin_token(owner, acme, world):  # noqa: F811 - the fixture imported above
    """A token with the tenant admin's role (made directly: the API issues no admin tokens)."""
    account = ServiceAccount.objects.create(tenant=acme, name="admin-robot", role="admin")
    token, plain = ApiToken.objects.issue(account)

    def restore():
        # The run may revoke this very token or deactivate its account (both allowed): undo it
        # before each example so every operation is still tried as an authenticated admin.
        ApiToken.objects.filter(pk=token.pk).update(revoked_at=None)
        ServiceAccount.objects.filter(pk=account.pk).update(is_active=True)

    return plain, restore


@pytest.fixture(params=["token", "session"])
def auth(request, owner, admin_token):
    """The headers and cookies of one way of being authenticated."""
    plain, restore = admin_token
    if request.param == "token":
        return {"name": "token", "headers": {"Authorization": f"Bearer {plain}"}, "cookies": {},
                "restore": restore}
    client = Client()
    client.force_login(owner)
    csrf = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(32))
    return {"name": "session", "headers": {"X-CSRFToken": csrf},
            "cookies": {"sessionid": client.cookies["sessionid"].value, "csrftoken": csrf},
            "restore": restore}


def _with_cookie_header(auth: dict) -> dict:
    # The schema loader's test client takes cookies only as a header.
    cookies = "; ".join(f"{name}={value}" for name, value in auth["cookies"].items())
    return {**auth["headers"], **({"Cookie": cookies} if cookies else {})}


@pytest.fixture
def keep_test_connection():
    """Django closes the connection after each request; the test client stops that, and so must we
    (on PostgreSQL, closing it would lose the test's transaction)."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def api_schemas(auth, keep_test_connection):
    """The schema once per generation mode. Negative cases leave the credentials alone (no generated
    Authorization header to mutate): a session request whose made-up bearer header is malformed is still
    the session's, rightly accepted, and ours replaces a token request's."""
    schemas = {}
    for mode in GenerationMode:
        schemas[mode] = schemathesis.openapi.from_wsgi("/api/schema/?format=json", get_wsgi_application(),
                                                       headers=_with_cookie_header(auth))
    schemas[GenerationMode.NEGATIVE].config.generation.update(with_security_parameters=False)
    return schemas


def _run(operation, mode: GenerationMode, examples: int, auth: dict, answered: list, failures: list,
         kind: str = "", **fixed):
    kind = kind or mode.value

    @given(case=operation.as_strategy(generation_mode=mode, **fixed))
    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def run(case):
        auth["restore"]()
        response = case.call(headers=auth["headers"], cookies=auth["cookies"])
        answered.append((kind, operation.label, case.method.upper(), response.status_code))
        case.validate_response(response, checks=CHECKS[mode], headers=auth["headers"])

    try:
        run()
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # noqa: B036 - hypothesis raises groups; collect all, report all
        failures.append(f"{kind} {operation.label}: {str(exc)[:2000]}")


@pytest.mark.parametrize("shard", range(SHARDS))
def test_no_input_makes_a_server_error_or_breaks_the_schema(api_schemas, auth, world, shard):  # noqa: F811
    # Operations are driven one by one here (not through schemathesis' pytest plugin) so that
    # they share this test's database fixtures.
    failures: list[str] = []
    answered: list[tuple[str, str, str, int]] = []
    by_mode = {mode: sorted((result.ok() for result in schema.get_all_operations()), key=lambda op: op.label)
               for mode, schema in api_schemas.items()}
    everything = by_mode[GenerationMode.POSITIVE]
    assert len(everything) > 30
    operations = everything[shard::SHARDS]
    for positive, negative in zip(operations, by_mode[GenerationMode.NEGATIVE][shard::SHARDS], strict=True):
        assert positive.label == negative.label
        _run(positive, GenerationMode.POSITIVE, EXAMPLES, auth, answered, failures)
        _run(negative, GenerationMode.NEGATIVE, NEGATIVE_EXAMPLES, auth, answered, failures)
        if "{id}" in positive.path:
            real = {"id": world[positive.path.split("/")[3]]}
            _run(positive, GenerationMode.POSITIVE, REAL_OBJECT_EXAMPLES, auth, answered, failures,
                 kind="real-object", path_parameters=real)

    per_operation = collections.Counter(label for _, label, _, _ in answered)
    per_mode = collections.Counter(mode for mode, *_ in answered)
    statuses = collections.Counter(str(status) for *_, status in answered)
    by_operation: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for mode, label, _, status in answered:
        by_operation[label][f"{mode[:3]} {status}"] += 1
    record(f"api_schemathesis_{auth['name']}_{shard}", {
        "group": "api_schemathesis", "cases": len(answered), "operations_x_auth": len(operations),
        "positive_cases": per_mode["positive"], "real_object_cases": per_mode["real-object"],
        "negative_cases": per_mode["negative"], "server_errors": statuses["500"],
        "failures_found": len(failures), "checks": ", ".join(check.__name__ for check in CHECKS[
            GenerationMode.NEGATIVE]),
        "failures_fixed": FOUND_AND_FIXED_FIGURE, "statuses": dict(statuses),
        "per_operation": {label: dict(counts) for label, counts in by_operation.items()},
        "fixed": FOUND_AND_FIXED})
    assert not failures, "\n\n".join(failures)
    # The run is worth something only if writes got through authentication (and CSRF) somewhere.
    # (401s are expected too: schemathesis also sends made-up bearer tokens, which must be refused.)
    assert any(method in ("POST", "PATCH", "DELETE") and 200 <= status < 300
               for _, _, method, status in answered)
    # And every operation was really tried as the tenant admin, not only refused at the door.
    authenticated = {label for mode, label, _, status in answered if mode == "positive" and status != 401}
    assert authenticated == {operation.label for operation in operations}
    assert all(per_operation[operation.label] >= 2 for operation in operations)
    assert len(answered) >= len(operations) * min(EXAMPLES, 5)
