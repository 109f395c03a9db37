"""Benchmark: the CMS's own time per card, presented -> job sent -> result recorded (prints, never asserts).

For N cards it runs the two CMS tasks' functions (`cms.station_report`, `cms.job_result`) in this
process, against a throwaway OpenBao (cms.localvault, temp folder, free port), a scratch SQLite
database (or PostgreSQL with --postgres) and the real Redis broker (the job goes to a
`station.bench-*` queue that is deleted at the end). Between the two, the station's part -- open the
sealed keys, run the compiled script on an in-process cardsim DESFire EV2 card, sign the result -- is
timed separately and NOT counted: the figure is CMS overhead only. It also counts Vault round
trips per card, by kind, and splits the wall time spent waiting on SQL, Vault and the broker.

Counted as a CMS worker does it: around each of the two task functions the database connection is
closed or kept exactly as cms/celery.py does between tasks (DATABASE_CONN_MAX_AGE, default 60 s: kept
and health-checked with one SELECT 1 at its first use in a task; 0: a new connection per task). NOT
counted: Celery's own part of a task in the worker (message decoding, acks, prefork IPC, task logging:
bench/pipeline.py measures the whole stack), the web process, and the PostgreSQL or Vault servers' CPU
beyond the wait for their answers.

Run: .venv/bin/python bench/cms_pipeline.py [--cards 200] [--postgres] [--profile N] [--sql-log FILE]
"""
from __future__ import annotations

import argparse
import os
import re
import secrets
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
# --profile: own CPU time by where the code lives
PACKAGES = ("django", "psycopg", "celery", "kombu", "redis", "requests", "urllib3", "cryptography",
            "structlog", "/cards/", "/keys/", "/audit/", "/cms/", "/readeragent/", "/cardproto/")

SPEC = {
    "schema": 1, "chip_family": "desfire",
    "picc": {"transport_key": {"master": None, "key_type": "aes128"},
             "master_key": {"policy": "diversified", "master": "cmk-master", "key_type": "aes128"},
             "key_settings": 0x0B},
    "applications": [{
        "aid": "F0A001", "key_settings": 0x0B, "key_type": "aes128", "num_keys": 3,
        "keys": [{"key_no": 0, "role": "amk", "policy": "diversified", "master": "amk-master"},
                 {"key_no": 1, "role": "read", "policy": "random"},
                 {"key_no": 2, "role": "write", "policy": "random"}],
        "files": [{"file_no": 1, "type": "standard", "comm_mode": "full",
                   "access": {"read": 1, "write": 2, "read_write": 0, "change": 0},
                   "size": 32, "initial_data_hex": "C0FFEE"},
                  {"file_no": 2, "type": "backup", "comm_mode": "mac",
                   "access": {"read": 1, "write": 0, "read_write": 0, "change": 0},
                   "size": 16, "initial_data_hex": "0102"}]}]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cards", type=int, default=200)
    parser.add_argument("--postgres", action="store_true", help="a scratch PostgreSQL database, not SQLite")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="print the N costliest functions (cProfile, CMS calls only) and SQL per card")
    parser.add_argument("--sort", default="cumulative", choices=["cumulative", "tottime"],
                        help="with --profile: order of the functions (tottime: own time, hot spots)")
    parser.add_argument("--profile-out", metavar="FILE",
                        help="with --profile: also write the cProfile stats there (pstats, for callers)")
    parser.add_argument("--sql-log", metavar="FILE", help="the last card's SQL, one statement a line")
    parser.add_argument("--sql-times", action="store_true",
                        help="per kind of statement (verb and first table): count and wall time per card")
    args = parser.parse_args()

    from cms import localvault

    with tempfile.TemporaryDirectory(prefix="bench-cms-") as folder:
        instance = localvault.up(Path(folder) / "openbao", port=localvault.free_port_pair(), quiet=True)
        database = None
        try:
            env = {"VAULT_ADDR": instance.addr, "VAULT_TOKEN": instance.cms_token(),
                   "VAULT_PREFIX": f"cms-bench-{uuid.uuid4().hex[:8]}",
                   "DJANGO_SETTINGS_MODULE": "cms.settings",
                   "LOG_LEVEL": "WARNING"}
            if args.postgres:
                import psycopg

                database = f"bench_pipeline_{uuid.uuid4().hex[:8]}"
                with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                    conn.execute(f'CREATE DATABASE "{database}"')
                env["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{database}"
            else:
                env["DATABASE_URL"] = f"sqlite:///{folder}/bench.sqlite3"
            os.environ.update(env)
            import django

            django.setup()
            from django.core.management import call_command

            call_command("migrate", verbosity=0, interactive=False)
            _run(args)
        finally:
            if database:
                from django.db import connections

                connections.close_all()
                import psycopg

                with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            localvault.down(Path(folder) / "openbao")


def _setup(cards: int):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from cards.models import CardProfile, Order, Station, Tenant
    from keys import services
    from readeragent import protocol

    tenant = Tenant.objects.create(slug="bench", name="Bench", gp_aid_prefix="A00000061700CAFE0001",
                                   desfire_aid_first=0xF0A000, desfire_aid_last=0xF0AFFF)
    for name in ("cmk-master", "amk-master"):
        master = services.master_key_create(tenant=tenant, name=name, method="an10922")
        services.master_key_version_create(master=master, state="active")
    profile = CardProfile.objects.create(tenant=tenant, name="bench", chip_family="desfire", spec=SPEC)
    hpke, sign = X25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    station = Station.objects.create(
        tenant=tenant, code=f"bench-{uuid.uuid4().hex[:6]}", status="approved",
        hpke_public_key=protocol.public_bytes_x25519(hpke.public_key()).hex(),
        sign_public_key=protocol.public_bytes_ed25519(sign.public_key()).hex())
    Order.objects.create(tenant=tenant, profile=profile, station=station, quantity=cards,
                         idempotency_key="bench", request_fingerprint="0" * 64)
    return station, hpke, sign


def _run(args) -> None:
    from cardsim.desfire import DESFireCard
    from cms import vault
    from cms.celery import app
    from keys import signing
    from readeragent import executor, protocol

    station, hpke, sign = _setup(args.cards)
    sent: list[dict] = []
    from cards.services import jobs

    real_send = jobs.dispatch

    def send(queue: str, envelope: dict) -> None:
        start = time.perf_counter()
        real_send(queue, envelope)  # through Redis, as in production
        waited["broker"] += (time.perf_counter() - start) * 1e3
        sent.append(envelope)

    jobs.dispatch = send
    calls: Counter = Counter()
    waited: Counter = Counter()  # wall ms of the current card spent waiting on each backing service
    real_call = vault.call

    def counting(method, path, body=None, *, what):
        kind = path.split("/")[1] if path.startswith("transit/") else path.split("/")[0] + "/" + \
            path.split("/")[1]
        calls[kind] += 1
        start = time.perf_counter()
        try:
            return real_call(method, path, body, what=what)
        finally:
            waited["vault"] += (time.perf_counter() - start) * 1e3

    vault.call = counting
    signing.ensure_signing_key()
    cms_key = None
    cms_ms, cpu_ms, card_ms, station_ms = [], [], [], []
    calls.clear()
    import cProfile

    from django.db import connection as db

    profiler = cProfile.Profile() if args.profile else None

    trail: list[str] = []  # the current card's SQL (--sql-log)
    statements: Counter = Counter()  # every SQL statement the CMS sends (no 9,000 cap like queries_log)
    by_kind: Counter = Counter()  # --sql-times: wall ms by "VERB table"
    kinds: Counter = Counter()

    def timed(kind: str, ms: float) -> None:
        waited["sql"] += ms
        by_kind[kind] += ms
        kinds[kind] += 1

    def count_sql(execute, sql, params, many, context):
        verb = sql.split(" ", 1)[0]
        statements[verb] += 1
        trail.append(sql)
        table = re.search(r'(?:FROM|INTO|UPDATE) "(\w+)"', sql)
        start = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            lock = " FOR UPDATE" if "FOR UPDATE" in sql else ""
            timed(f"{verb} {table.group(1) if table else '?'}{lock}", (time.perf_counter() - start) * 1e3)

    from django.db import connections

    wrapper_class = type(connections["default"])
    real_commit = wrapper_class._commit

    def timed_commit(self):
        start = time.perf_counter()
        try:
            return real_commit(self)
        finally:
            statements["COMMIT"] += 1
            timed("COMMIT", (time.perf_counter() - start) * 1e3)

    wrapper_class._commit = timed_commit

    real_usable = wrapper_class.is_usable

    def timed_usable(self):  # CONN_HEALTH_CHECKS: a kept connection's first use in a task
        start = time.perf_counter()
        try:
            return real_usable(self)
        finally:  # PostgreSQL: a SELECT 1 round trip; SQLite: no statement
            statements["health check"] += 1
            timed("health check", (time.perf_counter() - start) * 1e3)

    wrapper_class.is_usable = timed_usable
    from cms.celery import close_old_connections

    def cms(function, document):
        # as a CMS worker runs a task (cms/celery.py): the connection closed or kept around it by
        # DATABASE_CONN_MAX_AGE, reconnected or health-checked at its first use, all of it counted
        with db.execute_wrapper(count_sql):
            if profiler is None:
                close_old_connections()
                try:
                    return function(document)
                finally:
                    close_old_connections()
            profiler.enable()
            try:
                close_old_connections()
                return function(document)
            finally:
                close_old_connections()
                profiler.disable()
    split: dict[str, list[float]] = {"sql": [], "vault": [], "broker": []}
    for n in range(args.cards):
        uid = "04" + n.to_bytes(6, "big").hex().upper()
        trail.clear()
        waited.clear()
        report = protocol.sign_with({"v": 1, "type": "card_presented", "station": station.code,
                                     "reader": "bench", "uid": uid, "atr": "3B8180018080",
                                     "at": int(time.time()), "nonce": secrets.token_hex(8)}, sign)
        t0, c0 = time.perf_counter(), time.process_time()
        answer = cms(jobs.station_report_handle, report)
        t1, c1 = time.perf_counter(), time.process_time()
        assert answer["status"] == "dispatched", answer
        envelope = sent[-1]
        if cms_key is None:
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

            raw, _ = signing.public_key(envelope["signing_key_version"])
            cms_key = Ed25519PublicKey.from_public_bytes(raw)
        protocol.check_envelope(envelope, station=station.code, cms_public_key=cms_key)
        keys = protocol.open_keys(envelope["sealed_keys"], private_key=hpke, job_id=envelope["job_id"],
                                  station=station.code, expires_at=envelope["expires_at"])
        card = DESFireCard("ev2", uid=bytes.fromhex(uid))
        t2 = time.perf_counter()
        outcome = executor.run_steps(envelope["script"]["steps"], card, keys, chip_type="desfire_ev2")
        t3 = time.perf_counter()
        protocol.wipe_keys(keys)
        result = protocol.sign_with({"v": 1, "job_id": envelope["job_id"], "station": station.code, **outcome,
                                     "steps_done": len(outcome["steps"]), "stage": "", "started_at": 0,
                                     "finished_at": 0}, sign)
        t4, c4 = time.perf_counter(), time.process_time()
        recorded = cms(jobs.job_result_handle, result)
        t5, c5 = time.perf_counter(), time.process_time()
        assert recorded["state"] == "succeeded", recorded
        cms_ms.append((t1 - t0 + t5 - t4) * 1e3)
        cpu_ms.append((c1 - c0 + c5 - c4) * 1e3)
        card_ms.append((t3 - t2) * 1e3)
        station_ms.append((t4 - t1 - (t3 - t2)) * 1e3)
        for kind, values in split.items():
            values.append(waited[kind])
    with app.connection_for_write() as connection:
        # the list and its bindings: kombu's queue_delete left both for a queue this channel never
        # declared, and each run left its jobs (signed, keys sealed) in the broker
        queue = f"station.{station.code}"
        connection.default_channel.client.delete(queue, f"_kombu.binding.{queue}",
                                                 f"_kombu.binding_permanent.{queue}")

    cms_ms.sort()
    p99 = cms_ms[min(len(cms_ms) - 1, int(round(0.99 * (len(cms_ms) - 1))))]
    print(f"{args.cards} DESFire EV2 cards ({len(sent[-1]['script']['steps'])} steps each), {db.vendor}, "
          f"OpenBao {os.environ['VAULT_ADDR']}, broker {app.conf.broker_url}")
    print(f"CMS time per card (report -> job sent, result -> recorded): "
          f"median {statistics.median(cms_ms):.1f} ms, "
          f"p99 {p99:.1f} ms, mean {statistics.fmean(cms_ms):.1f} ms "
          f"=> one CMS worker process: {1000 / statistics.fmean(cms_ms):.0f} cards/s")
    print(f"of which CPU in this process (SQL client, ORM, crypto, JSON; not the database's or Vault's): "
          f"median {statistics.median(cpu_ms):.1f} ms")
    print("waiting on (wall, median per card; includes the client's own work for each call): "
          + ", ".join(f"{kind} {statistics.median(values):.1f} ms" for kind, values in split.items()))
    print(f"not counted: virtual card {statistics.median(card_ms):.1f} ms median, station crypto "
          f"{statistics.median(station_ms):.1f} ms median")
    per_card = {kind: count / args.cards for kind, count in sorted(calls.items())}
    print("Vault round trips per card: " + ", ".join(f"{k} {v:.2f}" for k, v in per_card.items())
          + f" (total {sum(per_card.values()):.2f})")
    print(f"SQL statements per card: {sum(statements.values()) / args.cards:.1f} ("
          + ", ".join(f"{k} {v / args.cards:.1f}" for k, v in statements.most_common()) + ")")
    if args.sql_times:
        print("SQL by kind (per card: statements, wall ms incl. the client's own work):")
        for kind, ms in by_kind.most_common():
            print(f"  {ms / args.cards:6.2f} ms  {kinds[kind] / args.cards:4.1f}x  {kind}")
    if profiler is not None:
        import pstats

        stats = pstats.Stats(profiler)
        by_package: Counter = Counter()  # own time by where the code lives
        for (filename, _, _), (_, _, own, _, _) in stats.stats.items():
            where = "builtins (C)" if filename == "~" else next(
                (name for name in PACKAGES if name in filename), "python stdlib/other")
            by_package[where.strip("/")] += own
        print("own CPU time per card by package (profiled, so inflated):")
        for where, own in by_package.most_common():
            print(f"  {own * 1e3 / args.cards:6.2f} ms  {where}")
        stats.sort_stats(args.sort).print_stats(args.profile)
        if args.profile_out:
            stats.dump_stats(args.profile_out)
    if args.sql_log:
        Path(args.sql_log).write_text("\n".join(sql[:300] for sql in trail))


if __name__ == "__main__":
    main()
