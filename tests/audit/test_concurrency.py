"""Several processes appending at once never fork the chain (PostgreSQL scratch database and SQLite file)."""
from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest
from django.conf import settings

from tests.audit.vaultserver import ROOT_TOKEN

ROOT = Path(__file__).resolve().parents[2]
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
WORKERS, EACH = 6, 40

pytestmark = pytest.mark.slow


def _env(database_url: str) -> dict:
    # Workers read the same chain key from the same Vault as the test session.
    return {**os.environ, "DATABASE_URL": database_url, "VAULT_ADDR": settings.VAULT_ADDR,
            "VAULT_TOKEN": ROOT_TOKEN, "DJANGO_SETTINGS_MODULE": "cms.settings", "PYTHONPATH": str(ROOT)}


def _manage(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def _append_from_processes(env: dict, tmp_path: Path, *mode: str) -> None:
    start = tmp_path / "go"
    command = [sys.executable, "-m", "tests.audit.append_worker"]
    workers = [subprocess.Popen([*command, str(n), str(EACH), str(start), *mode], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for n in range(WORKERS)]
    start.touch()
    for worker in workers:
        _, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err[-2000:]


def _assert_one_unbroken_chain(env: dict, fetch_sequences) -> None:
    verify = _manage(env, "audit_verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert f"ok: {WORKERS * EACH} events verified" in verify.stdout
    assert fetch_sequences() == list(range(1, WORKERS * EACH + 1))


@pytest.fixture
def scratch_postgres():
    try:
        admin = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at 127.0.0.1:5432: {exc}")
    name = f"audit_concurrency_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def test_processes_appending_at_once_on_postgresql_leave_one_unbroken_chain(audit_vault, scratch_postgres,
                                                                             tmp_path):
    env = _env(scratch_postgres)
    migrate = _manage(env, "migrate", "--noinput")
    assert migrate.returncode == 0, migrate.stderr[-2000:]
    _append_from_processes(env, tmp_path, "read-first")

    def sequences():
        with psycopg.connect(scratch_postgres) as conn:
            return [row[0] for row in conn.execute("SELECT sequence FROM audit_auditevent ORDER BY sequence")]

    _assert_one_unbroken_chain(env, sequences)


@pytest.mark.parametrize("mode", [(), ("read-first",)], ids=["append-only", "read-then-append"])
def test_processes_appending_at_once_on_sqlite_leave_one_unbroken_chain(audit_vault, tmp_path, mode):
    # read-then-append fails with "database is locked" unless SQLite transactions BEGIN IMMEDIATE.
    import sqlite3

    path = tmp_path / "audit.sqlite3"
    env = _env(f"sqlite:///{path}")
    migrate = _manage(env, "migrate", "--noinput")
    assert migrate.returncode == 0, migrate.stderr[-2000:]
    _append_from_processes(env, tmp_path, *mode)

    def sequences():
        with sqlite3.connect(path) as conn:
            return [row[0] for row in conn.execute("SELECT sequence FROM audit_auditevent ORDER BY sequence")]

    _assert_one_unbroken_chain(env, sequences)
