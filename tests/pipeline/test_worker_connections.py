"""A real CMS Celery worker (cms.celery.app, real Redis) keeps its database connection between tasks when
DATABASE_CONN_MAX_AGE says so, and opens one per task when it is 0 (cms/celery.py, CELERY_DB_REUSE_MAX in
cms/settings.py): Celery's Django fixup alone closes it around every task whatever the setting.

The worker runs in a thread of this process (solo pool, a queue of its own), so the test sees the
connection each task used; the database is the session's (SQLite or PostgreSQL with DATABASE_URL).
"""
from __future__ import annotations

import time
import uuid

import pytest
from django.db import connection, connections

from cms.celery import app

USED: list[tuple[int, object]] = []  # (task number, the DB-API connection it ran on), kept alive here


@app.task(name="tests.worker_connections.touch", ignore_result=True)
def touch(number: int) -> None:
    from cards.models import Tenant

    Tenant.objects.count()  # any query: the connection is opened, or reused (health-checked) here
    USED.append((number, connection.connection))


def _run_tasks(count: int) -> list[object]:
    from celery.contrib.testing.worker import start_worker

    if connection.vendor == "sqlite" and connection.is_in_memory_db():
        pytest.skip("Django ignores close() on an in-memory SQLite test database: run with DATABASE_URL")

    USED.clear()
    queue = f"test-connections-{uuid.uuid4().hex[:8]}"
    with start_worker(app, pool="solo", concurrency=1, perform_ping_check=False, queues=[queue],
                      loglevel="WARNING", shutdown_timeout=10):
        for number in range(count):
            touch.apply_async(args=[number], queue=queue)
            deadline = time.monotonic() + 20
            while len(USED) <= number and time.monotonic() < deadline:
                time.sleep(0.05)
    assert [number for number, _ in USED] == list(range(count))
    return [used for _, used in USED]


def test_a_kept_connection_serves_the_next_tasks(transactional_db, settings, monkeypatch):
    assert settings.DATABASES["default"]["CONN_MAX_AGE"] == 60  # the default
    assert settings.CELERY_DB_REUSE_MAX  # Celery's fixup leaves the connections to cms/celery.py
    used = _run_tasks(3)
    assert used[0] is used[1] is used[2]


def test_conn_max_age_0_gives_each_task_its_own_connection(transactional_db, monkeypatch):
    monkeypatch.setitem(connections.settings["default"], "CONN_MAX_AGE", 0)
    used = _run_tasks(3)
    assert len({id(u) for u in used}) == 3
    assert all(_closed(u) for u in used)  # closed after its task, not left for the garbage collector


def _closed(dbapi_connection) -> bool:
    if hasattr(dbapi_connection, "closed"):  # psycopg
        return bool(dbapi_connection.closed)
    try:  # sqlite3
        dbapi_connection.execute("SELECT 1")
    except Exception:  # noqa: BLE001 - sqlite3.ProgrammingError: cannot operate on a closed database
        return True
    return False


@pytest.fixture(autouse=True)
def _forget():
    yield
    for _, used in USED:
        used.close()  # the worker thread's kept connection, before the test database is dropped
    USED.clear()
