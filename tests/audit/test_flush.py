"""The test harness can still flush a database holding audit rows (see tests/audit/plugin.py)."""
from __future__ import annotations

import pytest
from django.db import DatabaseError, connection, transaction

from audit.models import AuditEvent
from audit.services import record_event
from tests.audit.tamper import raw


@pytest.mark.django_db(transaction=True)
def test_transactional_test_can_write_events_and_still_be_flushed_afterwards():
    record_event(action="test.committed")
    assert AuditEvent.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_after_a_flush_the_triggers_are_back_and_the_chain_restarts():
    # Runs after the test above: the flush removed its row and left the triggers in place.
    event = record_event(action="test.fresh")
    assert event.sequence == 1
    with pytest.raises(DatabaseError), transaction.atomic():
        raw("DELETE FROM audit_auditevent")
    if connection.vendor == "postgresql":
        with pytest.raises(DatabaseError), transaction.atomic():
            raw("TRUNCATE audit_auditevent")
