"""Helpers for end-to-end tests: an agent process, and the CMS's queue read as the CMS worker reads it."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from kombu import Connection

ROOT = Path(__file__).resolve().parents[2]


def start_redis(workdir: Path) -> tuple[str, subprocess.Popen]:
    """A private redis-server on a free port: concurrent test sessions on this machine all use queue "cms",
    so each end-to-end session gets its own broker (a real Redis, stopped by pid afterwards)."""
    import socket

    import redis

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    workdir.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no", "--dir", str(workdir)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 15
    while True:
        try:
            redis.Redis.from_url(url).ping()
            return url, process
        except redis.ConnectionError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {port} did not start") from None
            time.sleep(0.1)


def agent_process(home: Path, reader: str, broker: str, *, heartbeat: float = 1.0,
                  log: Path | None = None) -> subprocess.Popen:
    """`python -m readeragent run` as the station would start it."""
    out = open(log or home / "agent.log", "ab")  # noqa: SIM115 - closed with the process
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "readeragent", "--home", str(home), "run",
                             "--reader", reader, "--broker", broker, "--heartbeat", str(heartbeat),
                             "--loglevel", "INFO"],
                            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def wait_started(process: subprocess.Popen, log: Path, timeout: float = 30.0) -> None:
    """Until the agent printed its start line; fails with its log if it died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        if "ready." in text:
            return
        if process.poll() is not None:
            raise RuntimeError(f"the agent exited with {process.returncode}:\n{text[-3000:]}")
        time.sleep(0.2)
    raise TimeoutError(f"the agent did not start within {timeout} s:\n{text[-3000:]}")


def stop(process: subprocess.Popen, timeout: float = 10.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


class CmsQueue:
    """Reads Celery messages sent to queue "cms" (what `cms.station_report`/`cms.job_result` receive)."""

    def __init__(self, broker: str) -> None:
        self.connection = Connection(broker)
        self.queue = self.connection.SimpleQueue("cms")
        self.queue.clear()
        self.backlog: list[tuple[str, dict]] = []  # messages read while waiting for another one

    def next(self, task: str, timeout: float = 30.0, where=lambda doc: True) -> dict:
        """The first message (in arrival order) of `task` matching `where`; others stay for later calls."""
        for i, (name, doc) in enumerate(self.backlog):
            if name == task and where(doc):
                del self.backlog[i]
                return doc
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {task} message on queue cms within {timeout} s")
            try:
                message = self.queue.get(timeout=min(left, 1.0))
            except self.queue.Empty:
                continue
            message.ack()
            name, doc = message.headers.get("task"), message.decode()[0][0]
            if name == task and where(doc):
                return doc
            self.backlog.append((name, doc))

    def close(self) -> None:
        self.queue.close()
        self.connection.close()
