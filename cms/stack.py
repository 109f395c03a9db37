"""The single-machine stack behind `bin/start`: its processes, their settings, and their supervisor.

`manage.py runstack` uses this module; it knows nothing of the CMS's models, so the same
supervisor can later run pcscd, the virtual cards and the station agent (see EXTRA_PROCESSES).
"""
from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class StackConfig:
    """Where the instance lives and where its services listen."""

    instance_dir: Path
    host: str = "127.0.0.1"
    port: int = 8000
    vault_port: int = 8200

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def vault_dir(self) -> Path:
        return self.instance_dir / "openbao"

    @property
    def credentials_file(self) -> Path:
        return self.instance_dir / "admin-credentials"

    @property
    def secret_key_file(self) -> Path:
        return self.instance_dir / "secret-key"

    @property
    def env_file(self) -> Path:
        return self.instance_dir / "stack.env"


@dataclass(frozen=True)
class ProcessSpec:
    """One long-running child: a name for the messages, its argv, and extra environment.

    An essential child that exits stops the stack; a non-essential one (the demo's cards and agents)
    is reported and the CMS runs on without it.
    """

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    essential: bool = True


def worker_concurrency() -> int:
    """CMS_WORKER_CONCURRENCY, else 2 pool processes per core: a card's tasks wait on Vault, the
    database and Redis for about half their time (bench/pipeline.py), so two per core keep them busy."""
    value = os.environ.get("CMS_WORKER_CONCURRENCY", "").strip()
    return max(1, int(value)) if value else 2 * (os.cpu_count() or 1)


def core_processes(config: StackConfig) -> list[ProcessSpec]:
    """The CMS roles: web (gunicorn), worker (Celery, queue `cms`) and beat."""
    python = sys.executable
    return [
        ProcessSpec("web", [python, "-m", "gunicorn", "cms.wsgi:application",
                            "--bind", f"{config.host}:{config.port}", "--workers", "2",
                            "--graceful-timeout", "10", "--access-logfile", "-",
                            # its control socket would sit in $HOME, shared by every stack on the machine
                            "--no-control-socket"]),
        ProcessSpec("worker", [python, "-m", "celery", "-A", "cms", "worker", "-Q", "cms",
                               "--concurrency", str(worker_concurrency()), "-l", "INFO",
                               # nothing in the CMS asks workers about each other (no remote control,
                               # no revoked-task sync): gossip and mingle only cost start-up and chatter
                               "--without-gossip", "--without-mingle",
                               "-n", f"cms-{config.port}@%h"]),
        ProcessSpec("beat", [python, "-m", "celery", "-A", "cms", "beat", "-l", "INFO",
                             "-s", str(config.instance_dir / "celerybeat-schedule")]),
    ]


# The hook for more processes on the same machine. Each function gets the config and returns
# ProcessSpecs; they start after the core roles and stop before them. (The bin/start demo starts its
# virtual cards and agents itself, see runstack and cms/demo.py: it needs pcscd's free reader slots
# and its stations approved first.)
EXTRA_PROCESSES: list[Callable[[StackConfig], list[ProcessSpec]]] = []


def all_processes(config: StackConfig) -> list[ProcessSpec]:
    specs = core_processes(config)
    for extra in EXTRA_PROCESSES:
        specs.extend(extra(config))
    return specs


def _write_private(path: Path, text: str) -> None:
    """Create or replace a file only its owner can read (0600 from the first byte)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def ensure_secret_key(config: StackConfig) -> Path:
    """A random SECRET_KEY kept in the instance folder, so sessions and API token digests survive restarts."""
    if not config.secret_key_file.exists():
        _write_private(config.secret_key_file, secrets.token_urlsafe(50) + "\n")
    return config.secret_key_file


def child_environment(config: StackConfig, *, vault_addr: str, vault_token_file: Path,
                      base: dict[str, str] | None = None) -> dict[str, str]:
    """The settings every child reads: this instance's folder, its local Vault and its secret key.

    Vault credentials from the caller's environment are dropped: the stack talks to its own
    OpenBao with the CMS's least-privilege token, never with a token that happens to be set.
    """
    source = dict(os.environ if base is None else base)
    env = {k: v for k, v in source.items()
           if not k.startswith(("VAULT_TOKEN", "VAULT_ROLE_ID", "VAULT_SECRET_ID", "VAULT_NAMESPACE",
                                "VAULT_CACERT", "BAO_"))}
    env.update({
        "DJANGO_SETTINGS_MODULE": "cms.settings",
        "CMS_INSTANCE_DIR": str(config.instance_dir),
        "VAULT_ADDR": vault_addr,
        "VAULT_TOKEN_FILE": str(vault_token_file),
        "PYTHONUNBUFFERED": "1",
    })
    if not (source.get("SECRET_KEY") or source.get("SECRET_KEY_FILE")):
        env["SECRET_KEY_FILE"] = str(ensure_secret_key(config))
    env.setdefault("SITE_URL", config.url)
    return env


def write_env_file(config: StackConfig, env: dict[str, str]) -> None:
    """`set -a; . var/stack.env` lets an admin run manage.py against this stack (paths only, no secrets)."""
    names = ["CMS_INSTANCE_DIR", "VAULT_ADDR", "VAULT_TOKEN_FILE", "SECRET_KEY_FILE", "SITE_URL", "REDIS_URL",
             "DATABASE_URL_FILE"]
    lines = ["# Written by manage.py runstack: the settings its processes run with (file paths, no secrets)."]
    lines += [f"{name}={env[name]}" for name in names if env.get(name)]
    _write_private(config.env_file, "\n".join(lines) + "\n")


class Supervisor:
    """Starts children in their own process groups and stops every one of them, whatever happens.

    Each child leads a new session, so Ctrl-C in the terminal reaches only the supervisor,
    which then stops the children in reverse order: SIGTERM to the leader, a grace period,
    then SIGKILL to whatever is left of its process group (gunicorn workers, Celery pool).
    """

    def __init__(self, specs: list[ProcessSpec], env: dict[str, str], *, cwd: Path = BASE_DIR,
                 stop_timeout: float = 15, out=None) -> None:
        self.specs, self.env, self.cwd, self.stop_timeout = specs, env, cwd, stop_timeout
        self.out = out or sys.stdout
        self.running: list[tuple[ProcessSpec, subprocess.Popen]] = []
        self._stop_requested: int | None = None

    def say(self, text: str) -> None:
        print(f"runstack: {text}", file=self.out, flush=True)

    @property
    def stopping(self) -> bool:
        return self._stop_requested is not None

    def essential_exited(self) -> bool:
        """Whether an essential child has exited (it is left for wait() to reap and report)."""
        return any(spec.essential and _exited(process) for spec, process in self.running)

    def request_stop(self, signum, _frame=None) -> None:
        self._stop_requested = signum

    def start(self) -> None:
        self.launch(self.specs)

    def launch(self, specs: list[ProcessSpec]) -> None:
        """Start more children (the demo agents, once their stations are approved); stopped like the rest."""
        for spec in specs:
            process = subprocess.Popen(spec.argv, cwd=self.cwd, env={**self.env, **spec.env},
                                       stdin=subprocess.DEVNULL, start_new_session=True)
            self.running.append((spec, process))
            self.say(f"started {spec.name} (pid {process.pid})")

    def wait(self, poll: float = 0.2) -> int:
        """Block until a stop is requested (0) or a child exits on its own (1); then stop the rest."""
        code = 0
        reported: set[int] = set()
        while self._stop_requested is None:
            exited = [(spec, process) for spec, process in self.running
                      if process.pid not in reported and _exited(process)]
            fatal = [(spec, process) for spec, process in exited if spec.essential]
            if fatal:
                spec, process = fatal[0]
                _finish(process)
                self.say(f"{spec.name} exited with status {process.returncode}; stopping the others")
                code = 1
                break
            for spec, process in exited:
                reported.add(process.pid)
                _finish(process)
                self.say(f"{spec.name} exited with status {process.returncode}; the rest runs on without it")
            time.sleep(poll)
        else:
            self.say(f"received {signal.Signals(self._stop_requested).name}; stopping")
        self.stop()
        return code

    def stop(self) -> None:
        for _spec, process in reversed(self.running):
            if not _exited(process):
                try:
                    os.kill(process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + self.stop_timeout
        for spec, process in reversed(self.running):
            while not _exited(process) and time.monotonic() < deadline:
                time.sleep(0.05)
            if not _exited(process):
                self.say(f"{spec.name} did not stop within {self.stop_timeout:.0f}s; killing it")
            _finish(process)
        self.say("stopped " + ", ".join(spec.name for spec, _ in self.running))
        self.running = []


def _exited(process: subprocess.Popen) -> bool:
    """Whether a child has exited, WITHOUT reaping it: until it is reaped its pid, and so its process
    group's id, cannot be handed to another process (Popen.poll() would reap it)."""
    if process.returncode is not None:
        return True
    try:
        return os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:  # reaped elsewhere already
        return True


def _finish(process: subprocess.Popen) -> None:
    """SIGKILL whatever still runs in a child's process group (the leader's own children: gunicorn
    workers, the Celery pool), then reap the leader. Never the other way round: once the leader is reaped
    and its group is empty, the group's id is free, and on a busy machine (pid_max 32768) another
    program's new process group can get it; a late killpg would kill that."""
    if process.returncode is None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    process.wait()
