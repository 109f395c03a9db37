"""Property-based run over the OpenAPI schema: no input makes a server error or breaks the schema.

Schemathesis drives the Django WSGI app in process, as a real tenant admin, once with an
API token and once with a session (with its CSRF token). Examples per operation are kept
small so the default run stays well under a minute; raise SCHEMATHESIS_EXAMPLES to dig deeper.
"""
from __future__ import annotations

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
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from cards.models import Card, CardProfile, Station
from cms.models import ApiToken, ServiceAccount
from tests.cards.fixtures import desfire_spec

EXAMPLES = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "12"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture
def admin_token(owner, acme, masters):
    """A token with the tenant admin's role (made directly: the API issues no admin tokens)."""
    CardProfile.objects.create(tenant=acme, name="transit", chip_family="desfire", spec=desfire_spec())
    Card.objects.create(tenant=acme, uid="04112233445566", chip_type="desfire_ev3")
    Station.objects.create(tenant=acme, code="acme-line-1")
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
        return {"headers": {"Authorization": f"Bearer {plain}"}, "cookies": {}, "restore": restore}
    client = Client()
    client.force_login(owner)
    csrf = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(32))
    return {"headers": {"X-CSRFToken": csrf},
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
def api_schema(auth, keep_test_connection):
    return schemathesis.openapi.from_wsgi("/api/schema/?format=json", get_wsgi_application(),
                                          headers=_with_cookie_header(auth))


def test_no_input_makes_a_server_error_or_breaks_the_schema(api_schema, auth):
    # Operations are driven one by one here (not through schemathesis' pytest plugin) so that
    # they share this test's database fixtures.
    failures: list[str] = []
    answered: list[tuple[str, int]] = []
    authenticated: set[str] = set()  # operations that got at least one answer as the tenant admin
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) > 30
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def run(case):
            auth["restore"]()
            response = case.call(headers=auth["headers"], cookies=auth["cookies"])
            answered.append((f"{case.method} {case.formatted_path}", response.status_code))
            if response.status_code != 401:
                authenticated.add(case.operation.label)
            case.validate_response(response, checks=CHECKS, headers=auth["headers"])

        try:
            run()
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # noqa: B036 - hypothesis raises groups; collect all, report all
            failures.append(f"{operation.label}: {str(exc)[:2000]}")
    assert not failures, "\n\n".join(failures)
    # The run is worth something only if writes got through authentication (and CSRF) somewhere.
    # (401s are expected too: schemathesis also sends made-up bearer tokens, which must be refused.)
    assert any(call.startswith("POST") and status == 201 for call, status in answered)
    # And every operation was really tried as the tenant admin, not only refused at the door.
    assert authenticated == {operation.label for operation in operations}
    assert len(answered) >= len(operations) * min(EXAMPLES, 5)
