"""cardsim.pcscd trusts a pid it read from a file (its state file, /run/pcscd/pcscd.pid) only when that
process is a pcscd: a pid may since have been given to another program (pid_max 32768 on our machines), and
the last user of a pcscd started here SIGTERMs (then SIGKILLs) the pid in the state file. Real processes."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from cardsim import pcscd


def _spawn(argv0: str, *args: str) -> subprocess.Popen:
    script = "import time; time.sleep(30)"
    process = subprocess.Popen(["bash", "-c", 'exec -a "$0" "$1" -c "$2" "${@:3}"', argv0, sys.executable,
                                script, *args])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # until exec has replaced bash
        if Path(f"/proc/{process.pid}/cmdline").read_bytes().startswith(argv0.encode()):
            return process
        time.sleep(0.02)
    process.kill()
    pytest.fail("the stand-in process did not start")


@pytest.fixture
def processes():
    started: list[subprocess.Popen] = []
    yield lambda *argv: started.append(_spawn(*argv)) or started[-1]
    for process in started:
        process.kill()
        process.wait()


def test_a_pid_that_is_not_a_pcscd_is_not_taken_for_one(processes):
    other = processes("python3")
    assert not pcscd._is_pcscd(other.pid)
    assert not pcscd._is_pcscd(other.pid, own=True)


def test_a_pcscd_is_recognised_and_only_ours_as_ours(processes):
    # argv as _start_pcscd makes it (a stand-in that sleeps, named pcscd)
    ours = processes("/usr/sbin/pcscd", "--foreground", "--config", str(pcscd.OWN_CONF_DIR))
    system = processes("pcscd", "--foreground")
    assert pcscd._is_pcscd(ours.pid, own=True) and pcscd._is_pcscd(ours.pid)
    assert pcscd._is_pcscd(system.pid) and not pcscd._is_pcscd(system.pid, own=True)


def test_a_process_that_is_gone_is_not_a_pcscd(processes):
    gone = processes("/usr/sbin/pcscd", "--config", str(pcscd.OWN_CONF_DIR))
    gone.kill()
    gone.wait()
    assert not pcscd._is_pcscd(gone.pid, own=True)
