"""Benchmark: audit append and verify rates (events/s) on SQLite and PostgreSQL (prints, never asserts).

Each database is a scratch one (a temporary SQLite file; a fresh PostgreSQL database dropped
afterwards), migrated, filled with N events one transaction each (as services write them), then
verified. With --batch N the events go N at a time in one transaction (record_events), as the
provisioning path appends them (about 12 per append, two appends per card); CPU time per append too.
The chain key comes from VAULT_ADDR/VAULT_TOKEN when set, else from a throwaway
OpenBao dev server started here and stopped by pid.
Run: .venv/bin/python -m bench.audit [--events 5000] [--backend sqlite|postgres|both] [--batch 12]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def child(events: int, batch: int) -> None:
    """Runs inside a process whose DATABASE_URL names the scratch database."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cms.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from audit.chainkey import chain_key
    from audit.services import record_event, record_events
    from audit.verify import audit_chain_verify

    call_command("migrate", verbosity=0, interactive=False)
    chain_key()  # one Vault read per process, not part of the append rate

    def fields(n: int) -> dict:
        return dict(action="bench.append", actor_type="station", actor_name="bench",
                    card_uid="04A1B2C3D4E5F6", aid="F0A001", key_no=n % 14, key_version=1,
                    details={"n": n, "sw": "9100"})

    start, cpu = time.perf_counter(), time.process_time()
    if batch <= 1:
        for n in range(events):
            record_event(**fields(n))
    else:
        for first in range(0, events, batch):
            record_events([fields(n) for n in range(first, min(events, first + batch))])
    append_s, cpu_s = time.perf_counter() - start, time.process_time() - cpu
    appends = -(-events // max(1, batch))
    start = time.perf_counter()
    result = audit_chain_verify()
    verify_s = time.perf_counter() - start
    print(f"{connection.vendor:<11} {events} events, {max(1, batch)} per append: {events / append_s:8.0f} "
          f"events/s, {append_s / appends * 1e3:.2f} ms per append "
          f"(CPU here {cpu_s / appends * 1e3:.2f} ms); "
          f"verify {result.checked / verify_s:8.0f} events/s "
          f"({'ok' if result.ok else 'FAILED: ' + result.describe()})")


def run_child(database_url: str, events: int, vault_env: dict, batch: int) -> None:
    env = {**os.environ, **vault_env, "DATABASE_URL": database_url, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "bench.audit", "--child", "--events", str(events),
                           "--batch", str(batch)],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    print(done.stdout.strip() or f"failed:\n{done.stderr[-2000:]}")


def sqlite(events: int, vault_env: dict, batch: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        run_child(f"sqlite:///{Path(folder) / 'bench.sqlite3'}", events, vault_env, batch)


def postgres(events: int, vault_env: dict, batch: int) -> None:
    import psycopg

    try:
        admin = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        print(f"postgresql  skipped: not reachable at 127.0.0.1:5432 ({type(exc).__name__})")
        return
    name = f"bench_audit_{uuid.uuid4().hex[:10]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        run_child(f"postgresql://postgres@127.0.0.1:5432/{name}", events, vault_env, batch)
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--batch", type=int, default=1,
                        help="events per append (record_events); 1: one by one")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.events, args.batch)
        return
    vault = None
    if os.environ.get("VAULT_ADDR") and os.environ.get("VAULT_TOKEN"):
        vault_env = {}
    else:
        from tests.audit.vaultserver import ROOT_TOKEN, DevVault

        vault = DevVault().start()
        vault_env = {"VAULT_ADDR": vault.addr, "VAULT_TOKEN": ROOT_TOKEN}
    try:
        if args.backend in ("sqlite", "both"):
            sqlite(args.events, vault_env, args.batch)
        if args.backend in ("postgres", "both"):
            postgres(args.events, vault_env, args.batch)
    finally:
        if vault is not None:
            vault.stop()


if __name__ == "__main__":
    main()
