"""Pytest plugin: lets the test harness flush a test database that holds append-only audit rows.

Transactional tests (`transactional_db`, `live_server`) end with Django's `flush`, which is
TRUNCATE on PostgreSQL and DELETE on SQLite; the audit triggers rightly refuse both. Around a
flush that touches the audit table, and only there, this turns the triggers off and on again in
the flush's own transaction. Production code has no such switch. Registered in tests/conftest.py.
"""
from __future__ import annotations

from django.db.backends.base import operations

from audit import triggers

_original_execute_sql_flush = operations.BaseDatabaseOperations.execute_sql_flush


def _around(vendor: str) -> tuple[list[str], list[str]]:
    if vendor == "postgresql":
        return ([f"ALTER TABLE {triggers.TABLE} DISABLE TRIGGER USER"],
                [f"ALTER TABLE {triggers.TABLE} ENABLE TRIGGER USER"])
    return triggers.drop_statements(vendor), triggers.create_statements(vendor)


def execute_sql_flush_with_audit_triggers_off(self, sql_list):
    if not any(triggers.TABLE in sql for sql in sql_list):
        return _original_execute_sql_flush(self, sql_list)
    before, after = _around(self.connection.vendor)
    return _original_execute_sql_flush(self, [*before, *sql_list, *after])


def pytest_configure(config):
    operations.BaseDatabaseOperations.execute_sql_flush = execute_sql_flush_with_audit_triggers_off


def pytest_unconfigure(config):
    operations.BaseDatabaseOperations.execute_sql_flush = _original_execute_sql_flush
