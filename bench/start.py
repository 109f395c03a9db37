"""Benchmark: time from `manage.py runstack` (bin/start) to a healthy CMS, cold and warm, and to stop.

A fresh instance folder in /tmp and free ports; Redis from REDIS_URL (default database 12 of the
local server). Prints figures, never asserts.
Run: .venv/bin/python -m bench.start [--runs 2]
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]


def _free_port(pair: bool = False) -> int:
    """A free TCP port (with the next one free too if `pair`: OpenBao's cluster listener)."""
    from cms import localvault

    if pair:
        return localvault.free_port_pair()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _run_once(instance: Path, log) -> tuple[float, float]:
    port, vault_port = _free_port(), _free_port(pair=True)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DJANGO_", "CMS_", "VAULT_", "DATABASE_URL", "SECRET_KEY"))}
    env.update({"CMS_INSTANCE_DIR": str(instance),
                "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/12")})
    started = time.monotonic()
    process = subprocess.Popen([sys.executable, "manage.py", "runstack", "--port", str(port),
                                "--vault-port", str(vault_port), "--no-demo"], cwd=ROOT, env=env, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"runstack exited with {process.returncode}; see {log.name}")
            try:
                if requests.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.1)
        ready = time.monotonic() - started
        stopping = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)
        return ready, time.monotonic() - stopping
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2, help="warm runs after the cold one")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-start-") as tmp:
        instance = Path(tmp) / "var"
        with open(Path(tmp) / "runstack.log", "ab") as log:
            for run in range(args.runs + 1):
                ready, stop = _run_once(instance, log)
                kind = "cold (init Vault, migrate, first admin)" if run == 0 else "warm (reuse everything)"
                print(f"runstack {kind:42s} healthy after {ready:6.1f} s; stopped in {stop:5.1f} s",
                      flush=True)


if __name__ == "__main__":
    main()
