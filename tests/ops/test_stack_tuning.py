"""Settings the throughput bench (bench/pipeline.py) depends on: the SQLite file in WAL mode, the CMS worker's
pool size and its gossip/mingle turned off. Real processes and files, no mocks."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from cms.stack import StackConfig, core_processes, worker_concurrency

ROOT = Path(__file__).resolve().parents[2]


def test_the_default_sqlite_database_is_in_wal_mode(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "CMS_ENVIRONMENT"))}
    env.update(CMS_INSTANCE_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="cms.settings")
    code = ("import django; django.setup(); from django.db import connection; c = connection.cursor(); "
            "print(c.execute('PRAGMA journal_mode').fetchone()[0], "
            "c.execute('PRAGMA synchronous').fetchone()[0])")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    mode, synchronous = done.stdout.split()[-2:]
    assert mode == "wal"
    assert synchronous == "2"  # FULL: a committed key version survives a power loss
    assert (tmp_path / "cms.sqlite3").exists()


def test_worker_pool_size_comes_from_the_environment_or_two_per_core(monkeypatch):
    monkeypatch.delenv("CMS_WORKER_CONCURRENCY", raising=False)
    assert worker_concurrency() == 2 * (os.cpu_count() or 1)
    monkeypatch.setenv("CMS_WORKER_CONCURRENCY", "3")
    assert worker_concurrency() == 3
    worker = next(spec for spec in core_processes(StackConfig(instance_dir=Path("/nonexistent")))
                  if spec.name == "worker")
    argv = worker.argv
    assert argv[argv.index("--concurrency") + 1] == "3"
    assert "--without-gossip" in argv and "--without-mingle" in argv
