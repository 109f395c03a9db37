"""End to end: the CMS job-signing key is rotated (`manage.py signing_key rotate`: OpenBao Transit) while a
station enrolled before the rotation runs (`python -m readeragent run` on a pcscd reader); the station pins
the new version from the signed key roll over Redis, is then told to retire the old one, and a card
presented afterwards is provisioned: its job could only be signed with the new version, since the
station trusts no other any more. No re-enrolment."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from cardsim.desfire import DESFireCard
from readeragent.identity import Identity

from .stack import ROOT
from .station import agent_process, stop, wait_started
from .test_pipeline import _api, _order, _wait_job

pytestmark = [pytest.mark.pcsc, pytest.mark.vault, pytest.mark.slow, pytest.mark.xdist_group("pcsc")]

STATUS = """
import json
from cards.models import Station, StationKeyRoll
s = Station.objects.get(code=@CODE@)
rolls = [[r.new_version, r.retire_below, r.state] for r in StationKeyRoll.objects.filter(station=s)]
print("E2E " + json.dumps({"version": s.cms_signing_key_version, "rolls": rolls}))
"""


def _signing_key(stack, *args: str) -> dict:
    done = subprocess.run([sys.executable, "manage.py", "signing_key", *args], cwd=ROOT, env=stack.env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def _wait_rolls(stack, code: str, expected: list, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status = stack.shell(STATUS.replace("@CODE@", repr(code)))
        if status["rolls"] == expected or time.monotonic() > deadline:
            return status
        time.sleep(0.5)


def test_rotation_reaches_a_running_station_and_its_next_job_runs_with_the_new_key(cms_stack,
                                                                                   enrolled_station,
                                                                                   pcsc_card):
    code, station_id, home = enrolled_station
    before = sorted(Identity.load(home).cms_signing_keys)
    assert len(before) == 1
    old = before[0]
    card = DESFireCard("ev2", picc_key_type="des")
    uid = card.uid.hex().upper()
    reader = pcsc_card(card, connect=False)
    reader.bridge.remove()  # the reader is empty while the key rolls
    agent = agent_process(home, reader.reader, cms_stack.broker)
    try:
        wait_started(agent, home / "agent.log")
        rotated = _signing_key(cms_stack, "rotate", "--reason", "e2e")
        new = rotated["new_version"]
        assert rotated["previous_version"] == old and new == old + 1 and code in rotated["sent"]
        status = _wait_rolls(cms_stack, code, [[new, None, "pinned"]])
        assert status == {"version": new, "rolls": [[new, None, "pinned"]]}, status
        assert sorted(Identity.load(home).cms_signing_keys) == [old, new]

        retired = _signing_key(cms_stack, "roll", "--retire-below", str(new), "--station", code)
        assert retired["sent"] == [code]
        status = _wait_rolls(cms_stack, code, [[new, None, "pinned"], [new, new, "pinned"]])
        assert status["rolls"][-1] == [new, new, "pinned"], status
        assert sorted(Identity.load(home).cms_signing_keys) == [new]  # the old version is forgotten

        _order(cms_stack, "campus", station_id, uid)
        reader.bridge.insert()
        job = _wait_job(cms_stack, uid)
        detail = _api(cms_stack, "GET", f"jobs/{job['id']}/").json()
        assert job["state"] == "succeeded", detail
    finally:
        stop(agent)
        print((home / "agent.log").read_text(errors="replace")[-3000:])
