"""Benchmark: cards per second through the whole pipeline with 1, 4 and 16 stations (prints, never asserts).

Every part is real except the reader: the CMS runs as `bin/start` runs it (`manage.py runstack`: local
OpenBao, gunicorn, the Celery worker on queue `cms`), in a throwaway instance folder, with its own
redis-server on a free port.
Each station is an agent process (`readeragent.worker.Agent` with its own Celery worker bound to
`station.<code>`), enrolled over HTTP with the one-time token and approved. Instead of pcscd (which has
a handful of vpcd slots on this machine) each station presents in-process cardsim DESFire EV2 cards one
after the other: report `card_presented` -> CMS job -> agent runs it -> `cms.job_result` -> next card.
The stations start presenting together, once every one of them has started and subscribed to its queue
(a line's stations are up before its cards come; before, the first cards shared the CPU with the other
agents' start-up).

Printed per configuration: cards/s over the whole run (first report to last result sent), per-card
latency at the station (report -> result sent; median, p99), time inside the virtual card, the agent's
own time (verify, unseal, run, sign), and the agents' resident memory (after start-up, peak). Then the CPU
per card by process role (from /proc: the CMS worker's main process and its pool, gunicorn, beat, OpenBao,
Redis; the agents' own rusage split into start-up and the run; the driver), and the cores that kept busy.
The CMS's own time per card and its Vault round trips are measured in-process by bench/cms_pipeline.py;
the agents alone, without the CMS, by bench/agent.py.

Run: .venv/bin/python -m bench.pipeline [--cards 200] [--stations 1,4,16] [--postgres]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BROKER = os.environ.get("BENCH_BROKER", "")  # set by the driver for its station children
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"  # --postgres: scratch databases

SPEC = {
    "schema": 1, "chip_family": "desfire",
    "picc": {"transport_key": {"master": None, "key_type": "2k3des"},
             "master_key": {"policy": "diversified", "master": "cmk-master", "key_type": "aes128"},
             "key_settings": 0x0B},
    "applications": [{
        "aid": "F0D001", "key_settings": 0x0B, "key_type": "aes128", "num_keys": 3,
        "keys": [{"key_no": 0, "role": "amk", "policy": "diversified", "master": "amk-master"},
                 {"key_no": 1, "role": "read", "policy": "random"},
                 {"key_no": 2, "role": "write", "policy": "random"}],
        "files": [{"file_no": 1, "type": "standard", "comm_mode": "full",
                   "access": {"read": 1, "write": 2, "read_write": 0, "change": 0},
                   "size": 32, "initial_data_hex": "C0FFEE"}]}]}

SETUP = """
import json
from django.contrib.auth import get_user_model
from cards.models import Tenant
from cards.services.profiles import profile_create
from keys import services
admin = get_user_model().objects.filter(is_superuser=True).order_by("pk").first()
tenant = Tenant.objects.get(slug="demo")
for name in ("cmk-master", "amk-master"):
    services.master_key_version_create(master=services.master_key_create(tenant=tenant, name=name,
                                       method="an10922", actor=admin), state="active", actor=admin)
profile = profile_create(actor=admin, tenant=tenant, name="bench", spec=json.loads(@SPEC@))
print("E2E " + json.dumps({"profile": profile.pk}))
"""

STATIONS = """
import json
from django.contrib.auth import get_user_model
from cards.models import Tenant, CardProfile, Order
from cards.services.stations import station_create
admin = get_user_model().objects.filter(is_superuser=True).order_by("pk").first()
tenant = Tenant.objects.get(slug="demo")
out = {}
for code in @CODES@:
    station, token = station_create(actor=admin, tenant=tenant, code=code, line="bench")
    out[code] = token
print("E2E " + json.dumps(out))
"""

APPROVE = """
import json
from django.contrib.auth import get_user_model
from cards.models import Station, Order, CardProfile
from cards.services.stations import station_approve
admin = get_user_model().objects.filter(is_superuser=True).order_by("pk").first()
profile = CardProfile.objects.get(pk=@PROFILE@)
for code in @CODES@:
    station = station_approve(actor=admin, station=Station.objects.get(code=code))
    Order.objects.create(tenant=station.tenant, profile=profile, station=station, quantity=@QUANTITY@,
                         idempotency_key="bench-" + code, request_fingerprint="0" * 64)
print("E2E " + json.dumps({"approved": len(@CODES@)}))
"""

JOBS = """
import json
from cards.models import Job
rows = Job.objects.filter(station__code__in=@CODES@).values_list("state", flat=True)
out = {}
for state in rows:
    out[state] = out.get(state, 0) + 1
print("E2E " + json.dumps(out))
"""


# --- one virtual station (a child process) ---------------------------------------------------------

class TimedCard:
    """An in-process virtual card as a Transport, adding up the time spent inside the card."""

    def __init__(self, card) -> None:
        self.card = card
        self.seconds = 0.0

    def transmit(self, apdu: bytes) -> bytes:
        start = time.perf_counter()
        try:
            return self.card.transmit(apdu)
        finally:
            self.seconds += time.perf_counter() - start


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def station_main(args) -> None:
    from celery.signals import worker_ready

    from cardsim.desfire import DESFireCard
    from readeragent.identity import Identity
    from readeragent.ledger import ReplayLedger
    from readeragent.monitor import make_report
    from readeragent.worker import STATION_REPORT, Agent, make_app, register, start_worker

    identity = Identity.load(Path(args.home))
    current: dict = {}
    finished = threading.Event()
    agent = Agent(identity, Path(args.home), None, make_app(BROKER), ReplayLedger.in_home(args.home),
                  card_source=lambda: (current["transport"], current["uid"], lambda: None))
    handle = agent.handle_job
    timings: list[dict] = []

    def handle_job(envelope):
        start = time.perf_counter()
        result = handle(envelope)
        current["agent_s"] = time.perf_counter() - start
        current["state"] = result["state"]
        finished.set()
        return result

    agent.handle_job = handle_job
    register(agent)

    subscribed = threading.Event()
    worker_ready.connect(lambda **_: subscribed.set(), weak=False)

    def present() -> None:
        # the worker has subscribed to its queue; then wait for the driver's go, given once every
        # station has (so no card is timed while other agents still start: a factory line's stations
        # are up before its cards come)
        if not subscribed.wait(120):
            Path(args.out).write_text(json.dumps({"timings": [{"state": "timeout"}], "rss_kb": 0}))
            os.kill(os.getpid(), 15)
            return
        time.sleep(0.2)
        Path(args.out + ".ready").touch()
        while not Path(args.out).with_name("go").exists():
            time.sleep(0.01)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        started = {"cpu_start_s": usage.ru_utime + usage.ru_stime, "rss_start_kb": _rss_kb()}
        for _ in range(args.cards):
            card = DESFireCard("ev2", picc_key_type="des")
            current.update(transport=TimedCard(card), uid=card.uid.hex().upper())
            finished.clear()
            t0 = time.time()
            agent.send(STATION_REPORT, make_report(identity, "card_presented", "bench", uid=current["uid"],
                                                   atr=card.atr.hex().upper(), chip_type="desfire_ev2"))
            if not finished.wait(60):
                timings.append({"state": "timeout"})
                break
            timings.append({"t0": t0, "t1": time.time(), "card_s": current["transport"].seconds,
                            "agent_s": current["agent_s"], "state": current["state"]})
        usage = resource.getrusage(resource.RUSAGE_SELF)
        Path(args.out).write_text(json.dumps({"timings": timings, "rss_kb": usage.ru_maxrss,
                                              "cpu_s": usage.ru_utime + usage.ru_stime, **started}))
        os.kill(os.getpid(), 15)  # warm shutdown of the worker below

    threading.Thread(target=present, daemon=True).start()
    start_worker(agent, loglevel="WARNING", name="bench")  # as `python -m readeragent run` does


# --- the driver ----------------------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_table() -> dict[int, tuple[int, float, str]]:
    """pid -> (parent pid, CPU seconds user+system so far, command line) from /proc (Linux)."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        table[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICK, cmd)
    return table


def _role(cmd: str) -> str:
    for needle, role in (("celery -A cms worker", "CMS worker"), ("celery -A cms beat", "beat"),
                         ("gunicorn", "gunicorn"), ("bao", "OpenBao"), ("redis-server", "Redis"),
                         ("runstack", "runstack")):
        if needle in cmd:
            return role
    return "other"


def cpu_sample(roots: list[int]) -> dict[int, tuple[str, float]]:
    """CPU seconds of every live process under `roots` (the stack and the broker), by pid with its role."""
    table = _proc_table()
    wanted, frontier = set(), [pid for pid in roots if pid in table]
    while frontier:
        pid = frontier.pop()
        wanted.add(pid)
        frontier += [kid for kid, (parent, _, _) in table.items() if parent == pid and kid not in wanted]
    roles = {pid: _role(table[pid][2]) for pid in wanted}
    for pid in wanted:  # the worker's own process (consumer, logging) apart from its pool's
        if roles[pid] == "CMS worker" and roles.get(table[pid][0]) == "CMS worker":
            roles[pid] = "CMS worker pool"
    return {pid: (roles[pid], table[pid][1]) for pid in wanted}


def cpu_split(before: dict, after: dict) -> dict[str, float]:
    """CPU seconds per role spent between two samples (a process that ended in between is not counted)."""
    out: dict[str, float] = {}
    for pid, (role, seconds) in after.items():
        out[role] = out.get(role, 0.0) + seconds - before.get(pid, (role, 0.0))[1]
    return out

def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def run_config(stack, profile: int, stations: int, cards: int, work: Path, roots: list[int]) -> None:
    from readeragent.identity import enroll

    per_station = max(1, -(-cards // stations))
    codes = [f"bench-{stations}-{i}-{secrets.token_hex(2)}" for i in range(stations)]
    tokens = stack.shell(STATIONS.replace("@CODES@", repr(codes)))
    homes = {}
    for code in codes:
        homes[code] = work / code
        enroll(cms_url=stack.url, station=code, token=tokens[code], home=homes[code])
    stack.shell(APPROVE.replace("@CODES@", repr(codes)).replace("@PROFILE@", str(profile))
                .replace("@QUANTITY@", str(per_station)))
    children = []
    started = time.time()
    cpu_before, driver_before = cpu_sample(roots), os.times()
    for code in codes:
        out = homes[code] / "timings.json"
        children.append((out, subprocess.Popen(
            [sys.executable, "-m", "bench.pipeline", "station", "--home", str(homes[code]), "--cards",
             str(per_station), "--out", str(out)], cwd=ROOT, stdout=subprocess.DEVNULL,
            stderr=open(homes[code] / "station.log", "w"))))  # noqa: SIM115
    deadline = time.time() + 180
    while not all(Path(f"{out}.ready").exists() for out, _ in children):
        if time.time() > deadline or any(child.poll() is not None for _, child in children):
            break
        time.sleep(0.05)
    for code in codes:  # all stations present from now on
        (homes[code] / "go").touch()
    for _, child in children:
        child.wait(timeout=1800)
    cpu = cpu_split(cpu_before, cpu_sample(roots))
    driver_after = os.times()
    cpu["bench driver"] = sum(driver_after[:2]) - sum(driver_before[:2])
    timings, rss, rss_start = [], [], []
    cpu["agents start"], cpu["agents"] = 0.0, 0.0
    for out, _ in children:
        data = json.loads(out.read_text()) if out.exists() else {"timings": [], "rss_kb": 0}
        timings += data["timings"]
        rss.append(data["rss_kb"])
        rss_start.append(data.get("rss_start_kb", 0))
        cpu["agents start"] += data.get("cpu_start_s", 0.0)
        cpu["agents"] += data.get("cpu_s", 0.0) - data.get("cpu_start_s", 0.0)
    ok = [t for t in timings if t.get("state") == "succeeded"]
    if not ok:
        print(f"{stations:>3} stations: no card succeeded; see {work}/*/station.log")
        return
    first, last = min(t["t0"] for t in ok), max(t["t1"] for t in ok)
    latency = [(t["t1"] - t["t0"]) * 1000 for t in ok]
    card_ms = [t["card_s"] * 1000 for t in ok]
    agent_ms = [t["agent_s"] * 1000 for t in ok]
    states = stack.shell(JOBS.replace("@CODES@", repr(codes)))
    rate = len(ok) / (last - first)
    median, p99 = statistics.median(latency), _percentile(latency, .99)
    print(f"{stations:>3} stations, {len(ok):>4}/{len(timings)} cards ok: {rate:6.1f} cards/s | per card "
          f"report->result median {median:6.1f} ms, p99 {p99:6.1f} ms"
          f" | in card {statistics.median(card_ms):5.1f} ms | agent {statistics.median(agent_ms):5.1f} ms "
          f"| agent RSS started {max(rss_start) / 1024:5.1f} MiB, peak {max(rss) / 1024:5.1f} MiB "
          f"| CMS jobs {states} "
          f"| wall {time.time() - started:5.1f} s", flush=True)
    total = sum(seconds for role, seconds in cpu.items() if role != "agents start")  # before the first card
    split = ", ".join(f"{role} {seconds * 1000 / len(ok):.1f}"
                      for role, seconds in sorted(cpu.items(), key=lambda kv: -kv[1]) if seconds > 0)
    print(f"      CPU ms per card ok: {split}"
          f" | total {total * 1000 / len(ok):.1f} ms = {total / (last - first):.2f} cores busy"
          f" | CPU ceiling on {os.cpu_count()} idle cores: {os.cpu_count() / total * len(ok):.0f} cards/s",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    station = sub.add_parser("station")
    station.add_argument("--home", required=True)
    station.add_argument("--cards", type=int, required=True)
    station.add_argument("--out", required=True)
    parser.add_argument("--cards", type=int, default=200,
                        help="cards per configuration (split over its stations)")
    parser.add_argument("--stations", default="1,4,16")
    parser.add_argument("--postgres", action="store_true",
                        help="run the CMS on a scratch database of the local PostgreSQL (127.0.0.1:5432), "
                             "not the instance's SQLite file")
    args = parser.parse_args()
    if args.command == "station":
        station_main(args)
        return

    from tests.e2e.stack import start_stack, stop_stack
    from tests.e2e.station import start_redis, stop

    global BROKER
    work = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    BROKER, redis_process = start_redis(work / "redis")  # a private broker: nobody else's queue "cms"
    os.environ["BENCH_BROKER"] = BROKER
    database_url = _scratch_database() if args.postgres else None
    print(f"starting the CMS stack in {work} on {'PostgreSQL' if database_url else 'SQLite'} ...", flush=True)
    stack = start_stack(work / "instance", BROKER, database_url=database_url)
    try:
        profile = stack.shell(SETUP.replace("@SPEC@", repr(json.dumps(SPEC))))["profile"]
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        from cms.stack import worker_concurrency

        print(f"CPU cores: {os.cpu_count()} (load average now {load}); CMS worker concurrency "
              f"{worker_concurrency()} (runstack, CMS_WORKER_CONCURRENCY); "
              f"Redis {BROKER}", flush=True)
        for count in (int(n) for n in args.stations.split(",")):
            run_config(stack, profile, count, args.cards, work, [stack.process.pid, redis_process.pid])
    finally:
        stop_stack(stack)
        stop(redis_process)
        if database_url:
            _drop_database(database_url)


def _scratch_database() -> str:
    import psycopg

    name = f"bench_pipeline_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"postgres://postgres@127.0.0.1:5432/{name}"


def _drop_database(url: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


if __name__ == "__main__":
    main()
