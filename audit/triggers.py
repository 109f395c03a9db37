"""The database refuses UPDATE, DELETE and TRUNCATE on audit events: trigger SQL per vendor.

Used by migration 0002 and by tests that must tamper with a row on purpose (they drop or
disable the trigger inside their own transaction, the way an attacker with DDL rights would).
"""
from __future__ import annotations

TABLE = "audit_auditevent"
MESSAGE = "audit events are append-only"

POSTGRES_ROW_TRIGGER = "audit_auditevent_refuse_change"
POSTGRES_TRUNCATE_TRIGGER = "audit_auditevent_refuse_truncate"
POSTGRES_CREATE = [
    f"""
    CREATE OR REPLACE FUNCTION audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION '{MESSAGE}: % refused on %', TG_OP, TG_TABLE_NAME
            USING ERRCODE = 'integrity_constraint_violation';
    END;
    $$
    """,
    f"""CREATE TRIGGER {POSTGRES_ROW_TRIGGER} BEFORE UPDATE OR DELETE ON {TABLE}
        FOR EACH ROW EXECUTE FUNCTION audit_refuse_change()""",
    f"""CREATE TRIGGER {POSTGRES_TRUNCATE_TRIGGER} BEFORE TRUNCATE ON {TABLE}
        FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change()""",
]
POSTGRES_DROP = [
    f"DROP TRIGGER IF EXISTS {POSTGRES_TRUNCATE_TRIGGER} ON {TABLE}",
    f"DROP TRIGGER IF EXISTS {POSTGRES_ROW_TRIGGER} ON {TABLE}",
    "DROP FUNCTION IF EXISTS audit_refuse_change()",
]

# SQLite has no TRUNCATE: a DELETE without WHERE is its truncate, and a DELETE trigger turns
# that optimisation off, so the row trigger refuses it as well.
SQLITE_UPDATE_TRIGGER = "audit_auditevent_refuse_update"
SQLITE_DELETE_TRIGGER = "audit_auditevent_refuse_delete"
SQLITE_CREATE = [
    f"""CREATE TRIGGER {SQLITE_UPDATE_TRIGGER} BEFORE UPDATE ON {TABLE}
        BEGIN SELECT RAISE(ABORT, '{MESSAGE}: UPDATE refused'); END""",
    f"""CREATE TRIGGER {SQLITE_DELETE_TRIGGER} BEFORE DELETE ON {TABLE}
        BEGIN SELECT RAISE(ABORT, '{MESSAGE}: DELETE refused'); END""",
]
SQLITE_DROP = [
    f"DROP TRIGGER IF EXISTS {SQLITE_UPDATE_TRIGGER}",
    f"DROP TRIGGER IF EXISTS {SQLITE_DELETE_TRIGGER}",
]


def create_statements(vendor: str) -> list[str]:
    if vendor == "postgresql":
        return POSTGRES_CREATE
    if vendor == "sqlite":
        return SQLITE_CREATE
    raise NotImplementedError(f"no append-only triggers for database vendor {vendor!r}")


def drop_statements(vendor: str) -> list[str]:
    if vendor == "postgresql":
        return POSTGRES_DROP
    if vendor == "sqlite":
        return SQLITE_DROP
    raise NotImplementedError(f"no append-only triggers for database vendor {vendor!r}")
