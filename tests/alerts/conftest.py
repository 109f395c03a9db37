"""Alert and webhook fixtures: two tenants and their people, on the real OpenBao of tests.support.vault."""
from __future__ import annotations

from tests.support import people
from tests.support.people import api_client, make_tenant, make_user  # noqa: F401  (re-exported)
from tests.web.conftest import web_client  # noqa: F401

# The shared two-tenant fixtures (tests/support/people.py), made visible to this folder's tests.
acme = people.acme
globex = people.globex
admin = people.admin
second_admin = people.second_admin
operator = people.operator
auditor = people.auditor
other_admin = people.other_admin


