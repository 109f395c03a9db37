"""A throwaway OpenBao dev server for the audit tests (the chain key lives in its KV v2)."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT_TOKEN = "audit-test-root"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def bao_binary() -> str:
    local = Path(sys.executable).with_name("bao")
    return str(local) if local.exists() else (shutil.which("bao") or "bao")


class DevVault:
    """`bao server -dev` on a free port; stop() ends exactly the process it started."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.addr = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 20.0) -> DevVault:
        self.process = subprocess.Popen(
            [bao_binary(), "server", "-dev", f"-dev-root-token-id={ROOT_TOKEN}",
             f"-dev-listen-address=127.0.0.1:{self.port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "BAO_ADDR": self.addr})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.addr}/v1/sys/health", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("OpenBao dev server did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
