"""Benchmark: the station side alone: jobs/s, CPU per job and resident memory of N agents (prints only).

No CMS: the driver plays it. It holds an Ed25519 "CMS" key, enrols nothing over HTTP (each station's
identity is made locally and trusts the driver's key), and sends signed, sealed DESFire jobs (the seed 003
flow of tests/readeragent/flows.py) with `send_task("station.run_job", queue="station.<code>")` on a
private redis-server; it reads the agents' `cms.job_result` messages from queue "cms" and sends each
station its next job when the previous result arrives. Each agent is a child process running the agent's
own worker (`readeragent.worker.Agent` + `worker_options`, as `python -m readeragent run` does) with an
in-process cardsim DESFire EV2 card in place of the reader.

What it tells apart from bench/pipeline.py: the agents' own CPU per job (verify, HPKE open, run, sign,
ledger, Celery consumer and producer), their start-up CPU and RSS, and Redis's share, without the CMS.

Run: .venv/bin/python -m bench.agent [--jobs 400] [--stations 1,16]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --- one station (a child process) ----------------------------------------------------------------

def station_main(args) -> None:
    import threading

    from readeragent.identity import Identity
    from readeragent.ledger import ReplayLedger
    from readeragent.worker import Agent, make_app, register, start_worker
    from tests.readeragent import flows

    identity = Identity.load(Path(args.home))
    done = {"jobs": 0}

    def card_source():
        return flows.make_desfire_card(), flows.DESFIRE_UID, lambda: None

    agent = Agent(identity, Path(args.home), None, make_app(args.broker), ReplayLedger.in_home(args.home),
                  card_source=card_source)
    handle = agent.handle_job
    started: dict = {}

    def handle_job(envelope):
        if not started:
            started.update(cpu_start_s=_cpu_s(), rss_start_kb=_rss_kb())
        result = handle(envelope)
        done["jobs"] += 1
        if done["jobs"] >= args.jobs:
            usage = resource.getrusage(resource.RUSAGE_SELF)
            Path(args.out).write_text(json.dumps({"rss_kb": usage.ru_maxrss, "cpu_s": _cpu_s(), **started}))
            threading.Timer(0.2, os.kill, (os.getpid(), 15)).start()  # warm shutdown after the ack
        return result

    agent.handle_job = handle_job
    register(agent)
    start_worker(agent, loglevel="WARNING", name="bench")  # as `python -m readeragent run` does


# --- the driver (plays the CMS) -----------------------------------------------------------------------

def run_config(broker: str, stations: int, jobs: int, work: Path, redis_pid: int) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from kombu import Connection, Queue

    from bench.pipeline import cpu_sample, cpu_split
    from readeragent import protocol
    from readeragent.identity import Identity
    from readeragent.worker import CMS_QUEUE, RUN_JOB, make_app
    from tests.readeragent import flows

    per_station = max(1, -(-jobs // stations))
    cms_key = Ed25519PrivateKey.generate()
    cms_public = protocol.public_bytes_ed25519(cms_key.public_key()).hex()
    homes, publics = {}, {}
    for i in range(stations):
        code = f"agent-{stations}-{i}-{uuid.uuid4().hex[:4]}"
        identity = Identity.generate(code, "http://bench.invalid")
        identity.cms_signing_keys = {1: cms_public}
        homes[code] = work / code
        identity.save(homes[code])
        publics[code] = identity.hpke_private_key.public_key()

    def envelope(code: str) -> dict:
        job_id, issued = str(uuid.uuid4()), int(time.time())
        script = {"version": protocol.SCRIPT_VERSION, "steps": flows.desfire_steps()}
        card = {"uid": flows.DESFIRE_UID, "chip_type": "desfire_ev2"}
        document = {"v": 1, "job_id": job_id, "station": code, "tenant": "bench", "issued_at": issued,
                    "expires_at": issued + 300, "card": card, "script": script,
                    "script_digest": protocol.script_digest(script), "signing_key_version": 1,
                    "sealed_keys": protocol.seal_keys(flows.desfire_keys(), public_key=publics[code],
                                                      job_id=job_id, station=code, expires_at=issued + 300)}
        return protocol.sign_with(document, cms_key)

    children = []
    for home in homes.values():
        children.append(subprocess.Popen(
            [sys.executable, "-m", "bench.agent", "station", "--home", str(home), "--jobs", str(per_station),
             "--out", str(home / "agent.json"), "--broker", broker], cwd=ROOT, stdout=subprocess.DEVNULL,
            stderr=open(home / "agent.log", "w")))  # noqa: SIM115
    app = make_app(broker)
    sent = dict.fromkeys(homes, 0)
    states: dict[str, int] = {}
    cpu_before, driver_before = cpu_sample([redis_pid]), os.times()
    first = time.time()
    for code in homes:  # each station's first job waits in its queue until the agent subscribes
        app.send_task(RUN_JOB, args=[envelope(code)], queue=f"station.{code}")
        sent[code] = 1
    received = 0
    arrivals: list[float] = []
    with Connection(broker) as connection:
        queue = Queue(CMS_QUEUE, routing_key=CMS_QUEUE)

        def on_message(body, message) -> None:
            nonlocal received
            result = body[0][0]
            code = result["station"]
            states[result["state"]] = states.get(result["state"], 0) + 1
            received += 1
            message.ack()
            if sent[code] < per_station:
                app.send_task(RUN_JOB, args=[envelope(code)], queue=f"station.{code}")
                sent[code] += 1
            arrivals.append(time.time())

        with connection.Consumer(queue, callbacks=[on_message], accept=["json"]):
            deadline = time.monotonic() + 600
            while received < per_station * stations and time.monotonic() < deadline:
                try:
                    connection.drain_events(timeout=5)
                except TimeoutError:
                    if all(child.poll() is not None for child in children):
                        break
    last = time.time()
    for child in children:
        child.wait(timeout=60)
    cpu = cpu_split(cpu_before, cpu_sample([redis_pid]))
    cpu["driver (plays CMS)"] = sum(os.times()[:2]) - sum(driver_before[:2])
    rss, rss_start, start_s, steady_s = [], [], 0.0, 0.0
    for home in homes.values():
        data = json.loads((home / "agent.json").read_text()) if (home / "agent.json").exists() else {}
        rss.append(data.get("rss_kb", 0))
        rss_start.append(data.get("rss_start_kb", 0))
        start_s += data.get("cpu_start_s", 0.0)
        steady_s += data.get("cpu_s", 0.0) - data.get("cpu_start_s", 0.0)
    cpu["agents"] = steady_s
    # the first job of each station is in the start-up window: rate over the rest
    gaps = sorted(arrivals)  # result arrival times
    rate = (len(gaps) - stations) / (gaps[-1] - gaps[stations - 1]) if len(gaps) > stations + 1 else 0.0
    per_job_ms = steady_s * 1000 / max(1, received)
    print(f"{stations:>3} stations, {received}/{per_station * stations} results {states}: {rate:6.1f} jobs/s "
          f"(whole run {received / (last - first):5.1f}) | agent CPU per job {per_job_ms:5.1f} ms"
          f", start-up {start_s / stations:4.2f} s each | agent RSS after start-up median "
          f"{statistics.median(rss_start) / 1024:5.1f} MiB, peak {max(rss) / 1024:5.1f} MiB", flush=True)
    split = ", ".join(f"{role} {seconds * 1000 / max(1, received):.1f}"
                      for role, seconds in sorted(cpu.items(), key=lambda kv: -kv[1]) if seconds > 0)
    print(f"      CPU ms per job: {split}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    station = sub.add_parser("station")
    station.add_argument("--home", required=True)
    station.add_argument("--jobs", type=int, required=True)
    station.add_argument("--out", required=True)
    station.add_argument("--broker", required=True)
    parser.add_argument("--jobs", type=int, default=400, help="jobs per configuration (split over stations)")
    parser.add_argument("--stations", default="1,16")
    args = parser.parse_args()
    if args.command == "station":
        station_main(args)
        return
    from tests.e2e.station import start_redis, stop

    work = Path(tempfile.mkdtemp(prefix="bench-agent-"))
    broker, redis_process = start_redis(work / "redis")
    print(f"CPU cores: {os.cpu_count()}, load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}; "
          f"Redis {broker}; work {work}", flush=True)
    try:
        for count in (int(n) for n in args.stations.split(",")):
            run_config(broker, count, args.jobs, work, redis_process.pid)
    finally:
        stop(redis_process)


if __name__ == "__main__":
    main()
