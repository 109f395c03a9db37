"""A backing service that is down is a 503 from the API, never a 500: Vault (sealed, unreachable) and the
audit key were already; the database restarting or unreachable too (found by
tests/faults/test_postgres_restart.py: GET /api/v1/jobs/ answered 500 while PostgreSQL was down)."""
from __future__ import annotations

import pytest
from django import db

from cms.api import exception_handler


@pytest.mark.parametrize("error", [
    db.OperationalError('connection failed: connection to server at "127.0.0.1", port 49709 failed: '
                        "Connection refused"),
    db.OperationalError("terminating connection due to administrator command"),
    db.InterfaceError("connection already closed"),
])
def test_a_database_that_is_down_is_503_without_the_drivers_text(error):
    response = exception_handler(error, {"view": None, "request": None})
    assert response.status_code == 503
    assert response.data["detail"] == "the database is unavailable; try again shortly"
    assert "127.0.0.1" not in str(response.data) and "49709" not in str(response.data)


def test_an_unexpected_error_is_still_a_500_without_internals():
    response = exception_handler(RuntimeError("internal detail"), {"view": None, "request": None})
    assert response.status_code == 500
    assert "internal detail" not in str(response.data)
