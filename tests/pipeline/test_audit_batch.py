"""`audit.services.record_events`: a batch is one chain segment that verifies like one-by-one appends,
is all-or-nothing, and never forks the chain when processes append at once (batches and single events
mixed), on SQLite and PostgreSQL. Real OpenBao holds the chain key."""
from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest
from django.conf import settings
from django.db import transaction

from audit.chain import event_hash, fields_of
from audit.chainkey import chain_key
from audit.errors import AuditError
from audit.models import GENESIS_HASH, AuditEvent, ChainHead
from audit.services import EventBatch, record_event, record_events
from audit.verify import audit_chain_verify
from tests.pipeline.batch_append_worker import BATCH

ROOT = Path(__file__).resolve().parents[2]
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
WORKERS, ROUNDS = 4, 15


def test_a_batch_links_each_event_to_the_one_before_and_verifies(vault, acme):
    first = record_event(action="test.before", tenant=acme)
    batch = record_events([{"action": "test.batch", "tenant": acme, "card_uid": "04aa", "key_no": n,
                            "details": {"n": n}} for n in range(5)])
    last = record_event(action="test.after")
    events = list(AuditEvent.objects.order_by("sequence"))
    assert [e.sequence for e in events] == list(range(1, 8))
    assert [e.action for e in events] == ["test.before", *["test.batch"] * 5, "test.after"]
    assert events[0].prev_hash == GENESIS_HASH
    for before, after in zip(events, events[1:], strict=False):
        assert after.prev_hash == before.hash
    # each stored hash is the one-by-one HMAC of that event's own fields (what verify recomputes)
    key = chain_key()
    assert all(event_hash(key, fields_of(e)) == e.hash for e in events)
    assert [e.hash for e in batch] == [e.hash for e in events[1:6]]
    assert events[1].card_uid == "04AA" and events[3].details == {"n": 2}
    head = ChainHead.objects.get()
    assert head.sequence == 7 and head.hash == last.hash == events[-1].hash
    assert first.hash == events[0].hash
    result = audit_chain_verify()
    assert result.ok and result.checked == 7


def test_an_invalid_event_in_a_batch_writes_none_of_it(db, vault):
    record_event(action="test.before")
    with pytest.raises(AuditError, match="action must be 1 to 64"):
        record_events([{"action": "test.fine"}, {"action": ""}])
    assert list(AuditEvent.objects.values_list("action", flat=True)) == ["test.before"]
    assert ChainHead.objects.get().sequence == 1
    assert record_events([]) == []
    assert audit_chain_verify().ok


def test_event_batch_appends_on_exit_and_drops_its_events_when_the_block_fails(db, vault):
    with EventBatch() as batch:
        batch.add(action="test.one")
        batch.add(action="test.two", result="failure")
        assert not AuditEvent.objects.exists()  # nothing written until the block ends
    with pytest.raises(RuntimeError), EventBatch() as batch:
        batch.add(action="test.three")
        raise RuntimeError("the work failed")
    with pytest.raises(AuditError):
        EventBatch().add(action="x" * 65)  # refused where it is added, not later
    assert list(AuditEvent.objects.order_by("sequence").values_list("action", flat=True)) == [
        "test.one", "test.two"]
    assert audit_chain_verify().ok


# --- several processes at once ------------------------------------------------------------------------

def _env(vault, database_url: str) -> dict:
    return {**os.environ, "DATABASE_URL": database_url, "VAULT_ADDR": settings.VAULT_ADDR,
            "VAULT_TOKEN": vault.cms_token, "VAULT_ROLE_ID": "", "VAULT_SECRET_ID": "",
            "VAULT_PREFIX": settings.VAULT_PREFIX, "DJANGO_SETTINGS_MODULE": "cms.settings",
            "PYTHONPATH": str(ROOT)}


def _manage(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def _append_from_processes(env: dict, tmp_path: Path) -> None:
    start = tmp_path / "go"
    command = [sys.executable, "-m", "tests.pipeline.batch_append_worker"]
    workers = [subprocess.Popen([*command, str(n), str(ROUNDS), str(start)], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for n in range(WORKERS)]
    start.touch()
    for worker in workers:
        _, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err[-2000:]


def _assert_one_unbroken_chain(env: dict, fetch) -> None:
    total = WORKERS * ROUNDS * (BATCH + 1)
    verify = _manage(env, "audit_verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert f"ok: {total} events verified" in verify.stdout
    rows = fetch()
    assert [row[0] for row in rows] == list(range(1, total + 1))
    # a batch is contiguous: no other writer's event lands inside it
    runs: dict[tuple[str, int], list[int]] = {}
    for sequence, action, name, n in rows:
        if action == "test.batch":
            runs.setdefault((name, n), []).append(sequence)
    assert len(runs) == WORKERS * ROUNDS
    assert all(seq == list(range(seq[0], seq[0] + BATCH)) for seq in runs.values())


@pytest.mark.slow
def test_processes_mixing_batches_and_single_events_on_sqlite_leave_one_unbroken_chain(vault, tmp_path):
    import sqlite3

    path = tmp_path / "audit.sqlite3"
    env = _env(vault, f"sqlite:///{path}")
    migrate = _manage(env, "migrate", "--noinput")
    assert migrate.returncode == 0, migrate.stderr[-2000:]
    _append_from_processes(env, tmp_path)

    def fetch():
        with sqlite3.connect(path) as conn:
            return conn.execute("SELECT sequence, action, actor_name, json_extract(details, '$.n') "
                                "FROM audit_auditevent ORDER BY sequence").fetchall()

    _assert_one_unbroken_chain(env, fetch)


@pytest.mark.slow
def test_processes_mixing_batches_and_single_events_on_postgresql_leave_one_unbroken_chain(vault, tmp_path):
    try:
        admin = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at 127.0.0.1:5432: {exc}")
    name = f"audit_batch_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql://postgres@127.0.0.1:5432/{name}"
    try:
        env = _env(vault, url)
        migrate = _manage(env, "migrate", "--noinput")
        assert migrate.returncode == 0, migrate.stderr[-2000:]
        _append_from_processes(env, tmp_path)

        def fetch():
            with psycopg.connect(url) as conn:
                return conn.execute("SELECT sequence, action, actor_name, (details->>'n')::int "
                                    "FROM audit_auditevent ORDER BY sequence").fetchall()

        _assert_one_unbroken_chain(env, fetch)
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def test_the_returned_events_are_the_stored_rows_in_chain_order(vault, acme):
    """The append writes rows and head in one statement on PostgreSQL (no ORM INSERT): the events it
    hands back carry the ids of their own rows, in chain order, and are saved model instances."""
    record_event(action="test.before")
    batch = record_events([{"action": "test.batch", "key_no": n, "details": {"n": n, "nested": [n, None]}}
                           for n in range(12)])
    stored = {e.pk: e for e in AuditEvent.objects.filter(action="test.batch")}
    assert [stored[e.pk].sequence for e in batch] == [e.sequence for e in batch] == list(range(2, 14))
    assert [stored[e.pk].details for e in batch] == [{"n": n, "nested": [n, None]} for n in range(12)]
    assert all(not e._state.adding for e in batch)
    assert ChainHead.objects.get().hash == batch[-1].hash
    assert audit_chain_verify().ok


def test_a_value_too_long_for_its_column_is_never_stored_cut(vault, acme):
    """An event is hashed before it is written: a value cut to its column's length on the way in would
    leave a row that no longer matches its hash. PostgreSQL refuses it (nothing written, the head
    unmoved); SQLite has no length limit and keeps it whole. Either way the chain verifies."""
    from django.db import DataError, connection

    record_event(action="test.before")
    too_long = "04" * 20  # card_uid is varchar(32)
    if connection.vendor == "postgresql":
        with pytest.raises(DataError), transaction.atomic():
            record_events([{"action": "test.fine"}, {"action": "test.long", "card_uid": too_long}])
        assert list(AuditEvent.objects.values_list("action", flat=True)) == ["test.before"]
        assert ChainHead.objects.get().sequence == 1
    else:
        record_event(action="test.long", card_uid=too_long)
        assert AuditEvent.objects.get(action="test.long").card_uid == too_long.upper()
    assert audit_chain_verify().ok


def test_awkward_text_is_stored_exactly_as_it_was_hashed(vault, acme):
    """On PostgreSQL the rows travel as one JSON document (jsonb_to_recordset): quotes, backslashes,
    newlines, non-ASCII, characters outside the BMP and JSON look-alikes must land as the same text the
    hash was made of, in the columns and inside details, and the chain verify."""
    awkward = ['quote " and \' apostrophe', "back\\slash \\u0041 not an escape", "line\nbreak\ttab",
               "Grüße, 日本, émoji 🔑", '{"looks": ["like", "json"]}', "", " trailing space "]
    batch = record_events([{"action": "test.awkward", "actor_type": "system", "actor_name": text,
                            "request_id": text[:64], "details": {"text": text, text or "empty": [text]}}
                           for text in awkward])
    stored = {e.pk: e for e in AuditEvent.objects.filter(action="test.awkward")}
    for event, text in zip(batch, awkward, strict=True):
        row = stored[event.pk]
        assert (row.actor_name, row.request_id) == (text, text[:64])
        assert row.details == {"text": text, text or "empty": [text]}
        assert row.created_at == event.created_at  # to the microsecond, with its zone
        assert row.hash == event_hash(chain_key(), fields_of(row))
    assert audit_chain_verify().ok
