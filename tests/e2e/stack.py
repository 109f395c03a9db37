"""The CMS as `bin/start` runs it (`manage.py runstack`: local OpenBao, migrations, gunicorn, Celery worker
and beat) in a temporary instance folder, for end-to-end tests; plus `manage.py shell` in its environment."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from tests.support.ports import restartable_port

ROOT = Path(__file__).resolve().parents[2]


def free_port(pair: bool = False) -> int:
    """A free TCP port (with the next one free too if `pair`: OpenBao's cluster listener)."""
    if pair:  # OpenBao's, which tests/faults/test_vault_seal.py stops and starts again
        return restartable_port(pair=True)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _base_env() -> dict[str, str]:
    """This process's environment without its test settings and Vault credentials (the stack has its own)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("VAULT_", "PYTEST", "CMS_ENVIRONMENT", "DATABASE_URL", "CELERY_"))}
    env["CMS_ENVIRONMENT"] = "development"
    return env


@dataclass
class Stack:
    url: str
    instance_dir: Path
    broker: str
    process: subprocess.Popen
    log: Path
    database_url: str | None = None  # None: the instance folder's SQLite file

    def env(self) -> dict[str, str]:
        env = _base_env()
        if self.database_url:
            env["DATABASE_URL"] = self.database_url
        for line in (self.instance_dir / "stack.env").read_text().splitlines():
            if line and not line.startswith("#") and "=" in line:
                name, value = line.split("=", 1)
                env[name] = value
        env.update(CMS_INSTANCE_DIR=str(self.instance_dir), REDIS_URL=self.broker)
        return env

    def shell(self, code: str, timeout: float = 120) -> dict:
        """Run Python in `manage.py shell` against this stack; the code prints one line `E2E <json>`."""
        done = subprocess.run([sys.executable, "manage.py", "shell", "-c", code], cwd=ROOT, env=self.env(),
                              capture_output=True, text=True, timeout=timeout)
        for line in done.stdout.splitlines():
            if line.startswith("E2E "):
                return json.loads(line[4:])
        raise RuntimeError(f"manage.py shell failed ({done.returncode}):\n{done.stdout[-3000:]}\n"
                           f"{done.stderr[-3000:]}")

    def tail(self, n: int = 6000) -> str:
        return self.log.read_text(errors="replace")[-n:]


def start_stack(instance_dir: Path, broker: str, timeout: float = 180, *,
                database_url: str | None = None) -> Stack:
    """runstack in `instance_dir` on `broker`; on the SQLite file of the instance folder unless a
    `database_url` is given (this process's own DATABASE_URL is never passed on: tests/faults runs the
    stack on a private PostgreSQL cluster it may restart, tests/support/pgcluster.py)."""
    port, vault_port = free_port(), free_port(pair=True)
    instance_dir.mkdir(parents=True, exist_ok=True)
    log = instance_dir.parent / "stack.log"
    env = _base_env()
    env.update(CMS_INSTANCE_DIR=str(instance_dir), REDIS_URL=broker, PYTHONUNBUFFERED="1")
    if database_url:
        env["DATABASE_URL"] = database_url
    # Sealed keys live 30 s by default; on this shared 2-core machine (load 5-10) a job can wait longer
    # than that for the agent to start and take it, and then ends "refused" (expired) for no product
    # reason. The end-to-end tests prove the flow, not the TTL (tests/faults runs short job timers).
    env.setdefault("CMS_JOB_TTL_SECONDS", "180")
    process = subprocess.Popen([sys.executable, "manage.py", "runstack", "--port", str(port),
                                "--vault-port", str(vault_port), "--no-demo"], cwd=ROOT, env=env,
                               stdout=open(log, "ab"), stderr=subprocess.STDOUT,  # noqa: SIM115
                               start_new_session=True)
    stack = Stack(f"http://127.0.0.1:{port}", instance_dir, broker, process, log, database_url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"runstack exited with {process.returncode}:\n{stack.tail()}")
        try:
            if requests.get(f"{stack.url}/health", timeout=3).status_code == 200 \
                    and (instance_dir / "stack.env").exists():
                return stack
        except requests.RequestException:
            pass
        time.sleep(0.5)
    stop_stack(stack)
    raise TimeoutError(f"the stack did not turn healthy in {timeout} s:\n{stack.tail()}")


def stop_stack(stack: Stack) -> None:
    if stack.process.poll() is None:
        stack.process.send_signal(signal.SIGTERM)
        try:
            stack.process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(stack.process.pid, signal.SIGKILL)
            stack.process.wait(10)
