"""Audit writes: `record_event` and `record_events` append to the chain inside the caller's transaction."""
from __future__ import annotations

import datetime
import functools
import json
import re
from collections.abc import Iterable

import structlog
from django.db import transaction
from django.utils import timezone

from audit.chain import event_hash, fields_of
from audit.chainkey import chain_key
from audit.details import sanitize_details
from audit.errors import AuditError
from audit.models import GENESIS_HASH, ActorType, AuditEvent, ChainHead


def _actor_fields(actor, actor_type: str | None, actor_name: str | None) -> tuple[str, str, str]:
    """(type, id, name) copied as text so the event outlives the actor."""
    if actor is None:
        kind, ident, name = ActorType.SYSTEM, "", "system"
    elif not getattr(actor, "is_authenticated", True):
        kind, ident, name = ActorType.ANONYMOUS, "", "anonymous"
    else:
        from cms.models import ServiceAccount  # cms is the project core, not a CMS app

        if isinstance(actor, ServiceAccount):
            kind, name = ActorType.SERVICE, actor.username
        elif hasattr(actor, "get_username"):
            kind, name = ActorType.USER, actor.get_username()
        else:
            kind, name = type(actor).__name__.lower(), str(actor)
        ident = "" if getattr(actor, "pk", None) is None else str(actor.pk)
    return str(actor_type or kind), ident, (actor_name if actor_name is not None else name)


def _bound(name: str) -> str:
    return str(structlog.contextvars.get_contextvars().get(name, "") or "")


def _reserve(count: int) -> ChainHead | None:
    """UPDATE ... RETURNING (PostgreSQL, SQLite 3.35+): the row lock and the head's new values in one
    statement; None when there is no head row."""
    connection = transaction.get_connection()
    table = connection.ops.quote_name(ChainHead._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {table} SET sequence = sequence + %s WHERE id = %s "  # noqa: S608 - names only
                       "RETURNING sequence, hash", [count, ChainHead.HEAD_ID])
        row = cursor.fetchone()
    return None if row is None else ChainHead(pk=ChainHead.HEAD_ID, sequence=row[0], hash=row[1])


def _lock_head(count: int = 1) -> ChainHead:
    """Take the chain head and reserve `count` sequence numbers: the UPDATE comes first so concurrent
    appends queue here. The returned head's sequence is the last one reserved."""
    head = _reserve(count)
    if head is None:
        # No head yet (fresh or flushed database): start it from the last event, if any.
        last = AuditEvent.objects.order_by("-sequence").only("sequence", "hash").first()
        ChainHead.objects.bulk_create(
            [ChainHead(pk=ChainHead.HEAD_ID, sequence=last.sequence if last else 0,
                       hash=last.hash if last else GENESIS_HASH)],
            ignore_conflicts=True)
        head = _reserve(count)
        if head is None:
            raise AuditError("audit chain head could not be created")
    return head


def _build_event(*, action: str, actor=None, actor_type: str | None = None, actor_name: str | None = None,
                 tenant=None, result: str = "success", request_id: str = "", job_id: str = "",
                 card_uid: str = "", aid: str = "", key_no: int | None = None,
                 key_version: int | None = None, details: dict | None = None) -> AuditEvent:
    """An unsaved event with everything but its place in the chain (sequence, created_at, hashes)."""
    if not action or len(action) > 64:
        raise AuditError("action must be 1 to 64 characters")
    kind, ident, name = _actor_fields(actor, actor_type, actor_name)
    return AuditEvent(
        actor_type=kind, actor_id=ident, actor_name=name[:150],
        request_id=(request_id or _bound("request_id"))[:64],
        job_id=str(job_id or _bound("job_id"))[:64],
        tenant_id=getattr(tenant, "pk", None) if tenant is not None else None,
        tenant_slug=getattr(tenant, "slug", "") if tenant is not None else "",
        action=action, result=result,
        card_uid=(card_uid or "").upper(), aid=(aid or "").upper(),
        key_no=key_no, key_version=key_version,
        details=sanitize_details(details),
    )


def _append(events: list[AuditEvent]) -> list[AuditEvent]:
    """Chain `events` after the head, in order: one head lock, one key read, one insert."""
    if not events:
        return events
    # Read the key before taking the head lock: a Vault outage then fails without holding it.
    key = chain_key()
    head = _lock_head(len(events))
    sequence, previous = head.sequence - len(events), head.hash
    now = timezone.now()
    for event in events:
        sequence += 1
        event.sequence, event.created_at, event.prev_hash = sequence, now, previous
        event.hash = previous = event_hash(key, fields_of(event))
    connection = transaction.get_connection()
    if connection.vendor == "postgresql":
        _insert_and_move_head(connection, events, previous)
    else:
        if len(events) == 1:
            events[0].save(force_insert=True)
        else:
            AuditEvent.objects.bulk_create(events)
        ChainHead.objects.filter(pk=ChainHead.HEAD_ID).update(hash=previous)
    return events


@functools.cache
def _insert_statement() -> tuple[str, tuple[tuple[str, str], ...]]:
    """PostgreSQL: the rows (ONE jsonb parameter, a JSON array of objects, read by jsonb_to_recordset)
    and the head's new hash in ONE statement, a data-modifying WITH; returns the new ids in chain order.

    One JSON text and not one array per column: psycopg binds client-side, and quoting every element
    of a dozen text arrays in Python cost more than the statement saved; json.dumps runs in C. The
    record's columns have the fields' base types (text, not varchar(64): the column's own assignment
    cast then refuses a value too long, as the ORM's INSERT did, where a cast to varchar(64) would cut
    it silently after it was hashed)."""
    from django.db import connection

    quote = connection.ops.quote_name
    fields = [f for f in AuditEvent._meta.concrete_fields if not f.primary_key]
    columns = ", ".join(quote(f.column) for f in fields)
    record = ", ".join(f"{quote(f.column)} {_base_type(f.db_type(connection))}" for f in fields)
    statement = (
        f"WITH inserted AS (INSERT INTO {quote(AuditEvent._meta.db_table)} ({columns}) "  # noqa: S608 - names
        f"SELECT {columns} FROM jsonb_to_recordset(%s::jsonb) AS event({record}) "
        f"RETURNING {quote(AuditEvent._meta.pk.column)}, {quote('sequence')}), "
        f"head AS (UPDATE {quote(ChainHead._meta.db_table)} SET {quote('hash')} = %s "
        f"WHERE {quote(ChainHead._meta.pk.column)} = %s) "
        f"SELECT {quote(AuditEvent._meta.pk.column)} FROM inserted ORDER BY {quote('sequence')}")
    return statement, tuple((f.column, f.attname) for f in fields)


def _base_type(db_type: str) -> str:
    """varchar(64) -> text; other types without their modifier."""
    base = re.sub(r"[(].*[)]", "", db_type).strip()
    return "text" if base == "varchar" else base


def _insert_and_move_head(connection, events: list[AuditEvent], head_hash: str) -> None:
    """The append's write on PostgreSQL: one round trip and no ORM compile for rows the provisioning path
    writes twice a card (about 12 each); the same rows and head the ORM's INSERT and UPDATE write."""
    statement, names = _insert_statement()
    rows = [{column: _json_value(getattr(event, attname)) for column, attname in names} for event in events]
    with connection.cursor() as cursor:
        cursor.execute(statement, [json.dumps(rows, separators=(",", ":")), head_hash, ChainHead.HEAD_ID])
        ids = [row[0] for row in cursor.fetchall()]
    if len(ids) != len(events):
        raise AuditError(f"audit append wrote {len(ids)} of {len(events)} events")
    for event, pk in zip(events, ids, strict=True):
        event.pk = pk
        event._state.adding, event._state.db = False, connection.alias


def _json_value(value):
    # timestamps as ISO 8601 with their offset (timestamptz reads them back to the microsecond)
    return value.isoformat() if isinstance(value, datetime.datetime) else value


@transaction.atomic
def record_event(**fields) -> AuditEvent:
    """Append one event. Raises (and so aborts the caller's transaction) if it cannot be written.

    Fields: action, actor, actor_type, actor_name, tenant, result, request_id, job_id, card_uid,
    aid, key_no, key_version, details. `tenant` is any object with `.pk` and `.slug` (or None);
    `actor` a Django user, a ServiceAccount, None (the system), or anything else with
    `actor_type`/`actor_name` given. `request_id` and `job_id` default to the ones bound in
    structlog's contextvars.
    """
    return _append([_build_event(**fields)])[0]


def record_events(events: Iterable[dict]) -> list[AuditEvent]:
    """Append several events (each a dict of `record_event`'s fields) in order, as one chain segment.

    Why: a provisioning job writes ~20 events; one by one each takes the head lock and writes the
    head twice. Here the head is locked once, the chain key read once and the rows inserted in one
    statement. The hashes are exactly those one-by-one appends would give (same fields, each
    event's prev_hash the one before), so `audit_verify` cannot tell the difference. All or none:
    any invalid event raises before anything is written.
    """
    built = [_build_event(**fields) for fields in events]  # refused before the transaction is touched
    # No savepoint: inside a caller's transaction a failure to append aborts it (fail closed).
    with transaction.atomic(savepoint=False):
        return _append(built)


class EventBatch:
    """Events collected during a piece of work and appended together by `flush()` (or on exit).

    Used as `with EventBatch() as batch: ... batch.add(action=..., ...)` inside the caller's
    transaction; the events land at the end of the block, in the order they were added, in the
    same transaction, so a failure still rolls them back with the work they describe.
    """

    def __init__(self) -> None:
        self.pending: list[dict] = []

    def add(self, **fields) -> None:
        # fail at the call site (bad action, actor) rather than at flush; the event itself is built at
        # flush, once, because callers may still add to its details dict until then
        action = fields.get("action")
        if not action or len(action) > 64:
            raise AuditError("action must be 1 to 64 characters")
        _actor_fields(fields.get("actor"), fields.get("actor_type"), fields.get("actor_name"))
        self.pending.append(fields)

    def flush(self) -> list[AuditEvent]:
        pending, self.pending = self.pending, []
        return record_events(pending)

    def __enter__(self) -> EventBatch:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.flush()
        else:
            self.pending.clear()
