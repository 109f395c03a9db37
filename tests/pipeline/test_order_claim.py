"""A batch order shared by stations: its row is locked only just before the job row is inserted (after the
Vault unwrap and signature, so stations do not queue behind each other's Vault round trips), and its
quantity is counted again under that lock. Four different cards presented at the same instant to an order of
two cards: exactly two jobs are made, the other two presentations are refused by name. Each thread is a CMS
worker with its own PostgreSQL session released by a barrier (PostgreSQL only: SQLite serialises writers)."""
from __future__ import annotations

import uuid

import pytest
from django.db import connection

from audit.models import AuditEvent
from cards import tasks
from cards.models import Card, Job
from tests.support.concurrency import at_once

pytestmark = [pytest.mark.vault, pytest.mark.django_db(transaction=True)]
UIDS = [f"04A1B2C3D4E5{i:02X}" for i in range(1, 5)]


@pytest.fixture(autouse=True)
def _postgresql():
    if connection.vendor != "postgresql":
        pytest.skip("row locks under concurrent workers need PostgreSQL (bin/test runs the suite on it)")


def _present_at_once(station, uids: list[str]) -> list[dict]:
    return at_once(tasks.station_report.run, [station.report("card_presented", uid=uid) for uid in uids])


def test_an_order_never_gives_out_more_cards_than_its_quantity(station, desfire_profile, order_for, sent):
    order = order_for(desfire_profile, quantity=2)
    outcomes = _present_at_once(station, UIDS)
    statuses = sorted(o["status"] for o in outcomes)
    assert statuses == ["dispatched", "dispatched", "refused", "refused"], outcomes
    assert Job.objects.filter(order=order).values("card_id").distinct().count() == 2
    assert len(sent) == 2
    order.refresh_from_db()
    assert (order.state, order.cards_claimed) == ("in_progress", 2)
    # a refused presentation leaves no card row, no key version, and says why
    dispatched = {o["job"] for o in outcomes if o["status"] == "dispatched"}
    assert Card.objects.filter(uid__in=UIDS).count() == 2
    refusals = AuditEvent.objects.filter(action="card.presentation_refused", card_uid__in=UIDS)
    assert refusals.count() == 2
    assert all(e.details.get("reason") == "no_order" for e in refusals), [e.details for e in refusals]
    assert set(Job.objects.filter(order=order).values_list("id", flat=True)) == {
        uuid.UUID(j) for j in dispatched}
