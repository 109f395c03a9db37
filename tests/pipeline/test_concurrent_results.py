"""The same job result delivered twice at the same instant to two CMS workers (issue 6, "the same job
delivered twice at once"): the ledger moves once. Each thread is a CMS worker with its own PostgreSQL
session (Django opens one connection per thread), released together by a barrier, calling the task's
function as the Celery worker does; the job's row lock (SELECT ... FOR UPDATE) and its state machine let
one in and refuse the other as a replay. PostgreSQL only: SQLite serialises every writer anyway, so the
row lock would go untested."""
from __future__ import annotations

import pytest
from django.db import connection

from audit.models import AuditEvent
from cards import tasks
from cards.models import Job
from keys.models import KeyVersion
from tests.support.concurrency import at_once

from .conftest import DESFIRE_UID

pytestmark = [pytest.mark.vault, pytest.mark.django_db(transaction=True)]
WORKERS = 4
EXPIRED = {"step": None, "op": None, "apdu": None, "sw": None, "meaning": None, "kind": "ProtocolError",
           "message": "job expired before it started", "authentication": False, "reason": "expired"}


@pytest.fixture(autouse=True)
def _postgresql():
    if connection.vendor != "postgresql":
        pytest.skip("row locks under concurrent workers need PostgreSQL (bin/test runs the suite on it)")


def _deliver_at_once(results: list[dict]) -> list[dict]:
    return at_once(tasks.job_result.run, results)


@pytest.fixture
def dispatched(cms, station, desfire_profile, order_for):
    order_for(desfire_profile)
    assert cms.report(station.report("card_presented", uid=DESFIRE_UID))["status"] == "dispatched"
    return cms.last_envelope()


def _assert_moved_once(job_id: str) -> None:
    job = Job.objects.select_related("order").get(pk=job_id)
    assert job.state == "succeeded" and job.order.cards_done == 1
    assert set(KeyVersion.objects.filter(slot__card__uid=DESFIRE_UID).values_list("state", flat=True)) \
        == {"active"}
    finished = AuditEvent.objects.filter(action="job.finished", job_id=job_id, result="success")
    assert finished.count() == 1
    assert AuditEvent.objects.filter(action="card.key_changed", job_id=job_id).count() == 4


def test_the_same_result_to_several_workers_at_once_moves_the_ledger_once(station, dispatched):
    result = station.result(dispatched)
    outcomes = _deliver_at_once([result] * WORKERS)
    assert sorted(o["status"] for o in outcomes) == ["recorded"] + ["refused"] * (WORKERS - 1), outcomes
    assert all(o["reason"] == "replay" for o in outcomes if o["status"] == "refused")
    _assert_moved_once(dispatched["job_id"])


@pytest.mark.parametrize("refusal", ["replay", "expired"])
def test_the_result_racing_a_refused_copy_moves_the_ledger_once(station, dispatched, refusal):
    """The agent ran the first copy and refused the second: both answers reach two workers at once.
    Whichever is applied first, the job ends with what the card did (a replay refusal is never the job's
    outcome; an expired copy's refusal gives way to the run copy's late result)."""
    copy = station.result(dispatched, state="refused", upto=0, error={**EXPIRED, "reason": refusal})
    outcomes = _deliver_at_once([station.result(dispatched), copy])
    assert outcomes[0]["status"] == "recorded", outcomes
    _assert_moved_once(dispatched["job_id"])
