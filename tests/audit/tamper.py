"""Tampering with the audit table on purpose, the way someone with DDL rights could."""
from __future__ import annotations

from contextlib import contextmanager

from django.db import connection

from audit import triggers


@contextmanager
def triggers_off():
    """Disable (PostgreSQL) or drop and recreate (SQLite) the append-only triggers."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"ALTER TABLE {triggers.TABLE} DISABLE TRIGGER USER")
        else:
            for statement in triggers.SQLITE_DROP:
                cursor.execute(statement)
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute(f"ALTER TABLE {triggers.TABLE} ENABLE TRIGGER USER")
            else:
                for statement in triggers.SQLITE_CREATE:
                    cursor.execute(statement)


def raw(sql: str, params=None) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
