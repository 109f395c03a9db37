"""`manage.py audit_verify` as an operator runs it: exit 0 on a good chain, non-zero naming the bad row."""
from __future__ import annotations

import sqlite3
import subprocess
import sys

import pytest

from audit import triggers
from tests.audit.test_concurrency import ROOT, _env, _manage

pytestmark = pytest.mark.slow


@pytest.fixture
def sqlite_with_events(audit_vault, tmp_path):
    path = tmp_path / "verify.sqlite3"
    env = _env(f"sqlite:///{path}")
    assert _manage(env, "migrate", "--noinput").returncode == 0
    start = tmp_path / "go"
    start.touch()
    done = subprocess.run([sys.executable, "-m", "tests.audit.append_worker", "0", "5", str(start)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return path, env


def test_exit_code_is_zero_for_an_intact_chain(sqlite_with_events):
    _, env = sqlite_with_events
    done = _manage(env, "audit_verify")
    assert (done.returncode, done.stdout.split(":")[0]) == (0, "ok")


def test_exit_code_is_one_and_names_the_row_changed_behind_the_triggers(sqlite_with_events):
    path, env = sqlite_with_events
    with sqlite3.connect(path) as conn:
        for statement in triggers.SQLITE_DROP:
            conn.execute(statement)
        conn.execute("UPDATE audit_auditevent SET actor_name = 'someone-else' WHERE sequence = 4")
        row_id = conn.execute("SELECT id FROM audit_auditevent WHERE sequence = 4").fetchone()[0]
        for statement in triggers.SQLITE_CREATE:
            conn.execute(statement)
    done = _manage(env, "audit_verify")
    assert done.returncode == 1
    assert f"FAILED at event #4 (id {row_id}): hash does not match" in done.stderr


def test_exit_code_is_two_when_the_chain_key_cannot_be_read(sqlite_with_events):
    _, env = sqlite_with_events
    done = _manage({**env, "VAULT_ADDR": "http://127.0.0.1:9"}, "audit_verify")
    assert done.returncode == 2
    assert "audit chain key unavailable" in done.stderr
