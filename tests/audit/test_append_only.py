"""The database refuses to change or remove audit events; audit_verify catches rows changed anyway."""
from __future__ import annotations

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, transaction

from audit.models import AppendOnlyError, AuditEvent, ChainHead
from audit.services import record_event
from audit.verify import audit_chain_verify
from tests.audit.tamper import raw, triggers_off

pytestmark = pytest.mark.django_db


@pytest.fixture
def three_events():
    return [record_event(action="test.event", details={"n": n}) for n in range(3)]


def _refused(sql: str) -> str:
    with pytest.raises(DatabaseError) as excinfo, transaction.atomic():
        raw(sql)
    return str(excinfo.value)


def test_raw_update_is_refused_by_the_database(three_events):
    message = _refused("UPDATE audit_auditevent SET result = 'failure'")
    assert "append-only" in message
    assert AuditEvent.objects.filter(result="failure").count() == 0


def test_raw_delete_is_refused_by_the_database(three_events):
    message = _refused(f"DELETE FROM audit_auditevent WHERE id = {three_events[0].pk}")
    assert "append-only" in message
    assert AuditEvent.objects.count() == 3


def test_delete_of_every_row_is_refused_by_the_database(three_events):
    # SQLite's truncate is an unqualified DELETE; with a DELETE trigger it is refused row by row.
    assert "append-only" in _refused("DELETE FROM audit_auditevent")
    assert AuditEvent.objects.count() == 3


@pytest.mark.skipif(connection.vendor != "postgresql", reason="TRUNCATE is PostgreSQL's; SQLite has none")
def test_truncate_is_refused_by_the_database(three_events):
    assert "append-only" in _refused("TRUNCATE audit_auditevent")
    assert AuditEvent.objects.count() == 3


@pytest.mark.skipif(connection.vendor != "postgresql", reason="TRUNCATE is PostgreSQL's; SQLite has none")
def test_truncate_of_an_empty_table_is_refused_too():
    assert "append-only" in _refused("TRUNCATE audit_auditevent")


def test_orm_update_and_delete_are_refused_before_reaching_the_database(three_events):
    event = three_events[0]
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.filter(pk=event.pk).update(result="failure")
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.all().delete()
    with pytest.raises(AppendOnlyError):
        event.delete()
    event.result = "failure"
    with pytest.raises(AppendOnlyError):
        event.save()


def test_verify_accepts_an_untouched_chain(three_events, capsys):
    call_command("audit_verify")
    assert "ok: 3 events verified" in capsys.readouterr().out


def test_verify_names_the_row_whose_contents_were_changed(three_events):
    target = three_events[1]
    with triggers_off():
        raw("UPDATE audit_auditevent SET result = 'failure' WHERE id = %s", [target.pk])
    with pytest.raises(CommandError) as excinfo:
        call_command("audit_verify")
    assert excinfo.value.returncode == 1
    assert f"event #{target.sequence} (id {target.pk})" in str(excinfo.value)
    assert "hash does not match" in str(excinfo.value)


def test_verify_catches_a_row_rehashed_without_the_key(three_events):
    # Someone who recomputes a plain SHA-256 over the new contents still cannot forge the HMAC,
    # and the next row's prev_hash no longer matches either.
    target = three_events[0]
    with triggers_off():
        raw("UPDATE audit_auditevent SET details = %s, hash = %s WHERE id = %s",
            ['{"n": 99}', "f" * 64, target.pk])
    result = audit_chain_verify()
    assert not result.ok
    assert result.bad_sequence == target.sequence


def test_verify_catches_a_deleted_middle_row(three_events):
    with triggers_off():
        raw("DELETE FROM audit_auditevent WHERE id = %s", [three_events[1].pk])
    result = audit_chain_verify()
    assert (result.ok, result.bad_sequence, result.checked) == (False, three_events[2].sequence, 1)
    assert "sequence gap" in result.reason


def test_verify_catches_rows_cut_from_the_end(three_events):
    with triggers_off():
        raw("DELETE FROM audit_auditevent WHERE id = %s", [three_events[2].pk])
    result = audit_chain_verify()
    assert not result.ok
    assert "chain head is #3 but the last event is #2" in result.reason


def test_verify_catches_a_reordered_chain(three_events):
    first, second = three_events[0], three_events[1]
    with triggers_off():
        raw("UPDATE audit_auditevent SET sequence = 1000 WHERE id = %s", [first.pk])
        raw("UPDATE audit_auditevent SET sequence = %s WHERE id = %s", [first.sequence, second.pk])
        raw("UPDATE audit_auditevent SET sequence = %s WHERE id = %s", [second.sequence, first.pk])
    result = audit_chain_verify()
    assert (result.ok, result.bad_sequence) == (False, 1)


def test_lost_chain_head_is_rebuilt_from_the_last_event(three_events):
    ChainHead.objects.all().delete()
    event = record_event(action="test.after_head_loss")
    assert event.sequence == 4
    assert event.prev_hash == three_events[2].hash
    assert audit_chain_verify().ok
