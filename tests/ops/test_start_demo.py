"""`bin/start`'s demo: runstack with pcscd + vpcd, a virtual DESFire EV2 and a virtual JCOP 4 card, two
stations enrolled with `python -m readeragent enroll` and approved, an MES order for each over the REST
API, and the agents; both jobs succeed and the ledger holds active versions. SIGTERM leaves no child
(gunicorn, Celery worker and beat, OpenBao, cards, agents, a pcscd it started). A second start reuses
the cards and says they are provisioned; its order replay does not duplicate anything.

Real parts throughout, on a private redis-server (the demo's Celery queues `cms` and `station.demo-*`
must not meet another session's workers) and the machine's shared pcscd (cardsim.pcscd).
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from cardsim.pcscd import STATE_FILE
from tests.e2e.station import start_redis, stop
from tests.e2e.test_pipeline import LEDGER

from .test_start import ROOT, Stack, _alive, _stack_env

pytestmark = [pytest.mark.slow, pytest.mark.vault, pytest.mark.pcsc, pytest.mark.xdist_group("pcsc")]


def _wait_for(stack: Stack, pattern: str, timeout: float = 360) -> re.Match:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        output = stack.output()
        found = re.search(pattern, output)
        if found:
            return found
        for failure in ("demo stopped:", "demo skipped:"):
            assert failure not in output, output[-6000:]
        assert stack.process.poll() is None, f"runstack exited:\n{output[-6000:]}"
        time.sleep(1)
    pytest.fail(f"no {pattern!r} in the output after {timeout} s:\n{stack.output()[-6000:]}")


def _shell(stack: Stack, code: str) -> object:
    env = _stack_env(stack.instance, stack.redis_url)
    for line in (stack.instance / "stack.env").read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            name, value = line.split("=", 1)
            env[name] = value
    done = subprocess.run([sys.executable, "manage.py", "shell", "-c", code], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    line = next((x for x in done.stdout.splitlines() if x.startswith("E2E ")), None)
    assert line, f"manage.py shell failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return json.loads(line[4:])


def _pcscd_users() -> list[int]:
    try:
        return json.loads(STATE_FILE.read_text()).get("users", [])
    except (OSError, ValueError):
        return []


def _stop_and_check(stack: Stack) -> None:
    pid = stack.process.pid
    code, children = stack.terminate()
    assert code == 0, stack.output()[-4000:]
    left = {p: Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ")[:120]
            for p in children if _alive(p)}
    assert not left, f"still running after stop: {left}"
    assert pid not in _pcscd_users(), "runstack still counted as a user of the shared pcscd"


def test_bin_start_demo_provisions_both_cards_and_a_second_start_reuses_them(tmp_path):
    broker, redis_process = start_redis(tmp_path / "redis")
    instance = tmp_path / "var"
    stack = Stack(instance, tmp_path / "runstack.log", args=("--demo-timeout", "240"), redis_url=broker)
    try:
        stack.start()
        stack.wait_healthy()
        uids = {kind: _wait_for(stack, rf"demo: virtual {kind} ([0-9A-F]+) in reader").group(1)
                for kind in ("desfire-ev2", "jcop4")}
        for kind, uid in uids.items():
            _wait_for(stack, rf"demo: {kind} {uid}: succeeded")
        output = stack.output()
        assert "readeragent enroll --station demo-desfire" in output
        assert "{'demo-desfire': 'approved', 'demo-jcop': 'approved'}" in output
        assert f"{stack.url}/api/v1/jobs/" in output and f"{stack.url}/audit/" in output

        # The MES's view: both jobs succeeded, through the API with the demo's token.
        token_file = instance / "demo-api-token"
        headers = {"Authorization": f"Bearer {token_file.read_text().strip()}"}
        for uid in uids.values():
            body = requests.get(f"{stack.url}/api/v1/jobs/", params={"card_uid": uid}, headers=headers,
                                timeout=20).json()
            jobs = body["results"] if isinstance(body, dict) else body
            assert [job["state"] for job in jobs] == ["succeeded"], jobs
        assert token_file.read_text().strip() not in output

        # The ledger: every key version the cards confirmed is active.
        desfire = _shell(stack, LEDGER.replace("@UID@", repr(uids["desfire-ev2"])))
        assert {(role, key_no) for role, key_no, *_ in desfire} >= {("cmk", 0), ("amk", 0), ("app_key", 1)}
        assert all(state == "active" for *_, state in desfire), desfire
        jcop = _shell(stack, LEDGER.replace("@UID@", repr(uids["jcop4"])))
        assert sorted(role for role, *_ in jcop) == ["isd_dek", "isd_enc", "isd_mac"]
        assert all(state == "active" for *_, state in jcop), jcop
        # The cards' own memory: the JCOP 4 holds the new ISD key set and is locked (seed 002).
        card = json.loads((instance / "cards" / "jcop4.json").read_text())
        assert card["kind"] == "jcop4"

        _stop_and_check(stack)
        assert re.search(r"stopped web, worker, beat, card desfire-ev2, card jcop4, agent demo-desfire, "
                         r"agent demo-jcop", stack.output())

        # A second start: same cards (state files), no new order, no new job, no failure.
        first = len(stack.output())
        stack.start()
        stack.wait_healthy()
        for kind, uid in uids.items():
            _wait_for(stack, rf"the {kind} {uid} is already provisioned")
        _wait_for(stack, r"demo: look at the jobs")
        second = stack.output()[first:]
        assert "readeragent enroll" not in second  # the stations stay enrolled and approved
        orders = requests.get(f"{stack.url}/api/v1/orders/", headers=headers, timeout=20).json()
        orders = orders["results"] if isinstance(orders, dict) else orders
        assert len(orders) == 2, orders
        _stop_and_check(stack)
    finally:
        stack.kill_everything()
        stop(redis_process)
