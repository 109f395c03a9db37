"""End-to-end fixtures: the CMS stack (runstack on a private Redis) and an enrolled, approved station."""
from __future__ import annotations

import json
import secrets
import subprocess
import sys

import pytest

from .stack import ROOT, start_stack, stop_stack
from .station import start_redis, stop
from .test_pipeline import APPROVE, NEW_STATION, SETUP


@pytest.fixture(scope="module")
def cms_stack(tmp_path_factory):
    broker, redis_process = start_redis(tmp_path_factory.mktemp("redis"))
    stack = start_stack(tmp_path_factory.mktemp("stack") / "instance", broker)
    try:
        stack.data = stack.shell(SETUP)
        yield stack
    finally:
        stop_stack(stack)
        stop(redis_process)


def enroll_station(cms_stack, home) -> tuple[str, int]:
    """A new station of the demo tenant, enrolled with `readeragent enroll` into `home` and approved:
    (code, id)."""
    code = f"e2e-{secrets.token_hex(4)}"
    created = cms_stack.shell(NEW_STATION.replace("@CODE@", repr(code)))
    done = subprocess.run([sys.executable, "-m", "readeragent", "enroll", "--cms", cms_stack.url, "--station",
                           code, "--token", created["token"], "--home", str(home)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    enrolled = json.loads(done.stdout)
    assert enrolled["status"] == "enrolled" and enrolled["queue"] == f"station.{code}"
    approved = cms_stack.shell(APPROVE.replace("@CODE@", repr(code)))
    assert approved == {"status": "approved", "sign": enrolled["sign_public_key"]}
    return code, created["id"]


@pytest.fixture
def enrolled_station(cms_stack, tmp_path):
    home = tmp_path / "agent"
    code, station_id = enroll_station(cms_stack, home)
    return code, station_id, home
