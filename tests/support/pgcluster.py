"""A private PostgreSQL cluster for fault tests: its own initdb, pg_ctl, free port and socket folder.

The machine's shared PostgreSQL server (5432) is never touched: a test that restarts or kills the database
does it to this cluster only, which lives in a temporary folder and is stopped (`-m immediate`) and removed
afterwards. PostgreSQL refuses to run as root, so when the tests run as root the cluster runs as the
`postgres` system user (runuser); otherwise as the current user. Trust authentication on 127.0.0.1 only.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.ports import restartable_port


class PgUnavailable(RuntimeError):
    """No PostgreSQL server binaries on this machine (or the cluster did not start)."""


def _bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if not found:
        raise PgUnavailable("no /usr/lib/postgresql/*/bin/initdb")
    return Path(found[-1]).parent


def _free_port() -> int:
    return restartable_port()  # the fault tests restart the cluster on its port (tests/support/ports.py)


@dataclass
class PgCluster:
    root: Path
    port: int
    bindir: Path
    user: str | None  # the system user the server runs as (None: this process's user)

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "sock"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    def url(self, database: str = "cms") -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *argv: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
        command = [str(self.bindir / argv[0]), *argv[1:]]
        if self.user:
            command = ["runuser", "-u", self.user, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=self.root)
        if check and done.returncode != 0:
            raise PgUnavailable(f"{argv[0]} {argv[1:3]} exited {done.returncode}: {done.stderr[-1500:]}\n"
                                f"{self.tail()}")
        return done

    def tail(self, n: int = 2000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def _pg_ctl(self, action: str, *extra: str, timeout: float = 60) -> None:
        options = f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", action, "-D", str(self.data), "-l", str(self.log), "-o", options, "-w",
                  "-t", str(int(timeout)), *extra, timeout=timeout + 10)

    def start(self) -> None:
        self._pg_ctl("start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "stop", "-D", str(self.data), "-m", mode, "-w", "-t", "60", timeout=70)

    def restart(self, mode: str = "fast") -> None:
        """`pg_ctl restart -m <mode>`: every connection is dropped; back once it accepts connections."""
        self._pg_ctl("restart", "-m", mode)

    def running(self) -> bool:
        return self._run("pg_ctl", "status", "-D", str(self.data), check=False).returncode == 0

    def createdb(self, name: str) -> str:
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
        return self.url(name)

    def destroy(self) -> None:
        if self.data.exists() and self.running():
            self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "immediate", "-w", check=False)
        shutil.rmtree(self.root, ignore_errors=True)


def start_cluster(prefix: str = "cms-pg-") -> PgCluster:
    """initdb a new cluster in a fresh temporary folder (superuser `postgres`, trust) and start it."""
    bindir = _bin_dir()
    user = "postgres" if os.geteuid() == 0 else None
    # not under pytest's tmp_path: that is 0700 root, and the server may run as another user
    root = Path(tempfile.mkdtemp(prefix=prefix))
    cluster = PgCluster(root=root, port=_free_port(), bindir=bindir, user=user)
    cluster.socket_dir.mkdir()
    if user:
        entry = pwd.getpwnam(user)
        for path in (root, cluster.socket_dir):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    try:
        cluster._run("initdb", "-D", str(cluster.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                     "--no-sync", timeout=120)
        cluster.start()
        deadline = time.monotonic() + 30
        while cluster._run("pg_isready", "-h", "127.0.0.1", "-p", str(cluster.port), check=False).returncode:
            if time.monotonic() > deadline:
                raise PgUnavailable(f"the private cluster did not accept connections:\n{cluster.tail()}")
            time.sleep(0.2)
    except BaseException:
        cluster.destroy()
        raise
    return cluster
