"""The stack's supervisor: an essential child that exits stops the stack; a demo child (a virtual card, an
agent) that exits is reported and the CMS runs on. Real processes, no mocks."""
from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
from pathlib import Path

from cms.stack import ProcessSpec, Supervisor
from tests.ops.test_start import _alive

SLEEP = [sys.executable, "-c", "import time; time.sleep(60)"]
EXIT_3 = [sys.executable, "-c", "raise SystemExit(3)"]


def _web_and_a_card_stopped_after_2_s(card: ProcessSpec) -> tuple[str, subprocess.Popen]:
    """A 'web' that sleeps and a non-essential `card`; SIGTERM-like stop request after 2 s. Returns what
    the supervisor said and the card's process."""
    out = io.StringIO()
    supervisor = Supervisor([ProcessSpec("web", SLEEP)], {}, out=out, stop_timeout=5)
    supervisor.start()
    supervisor.launch([card])
    process = supervisor.running[-1][1]
    timer = threading.Timer(2.0, supervisor.request_stop, args=(15,))
    timer.start()
    try:
        assert supervisor.wait(poll=0.05) == 0
    finally:
        timer.cancel()
        if supervisor.running:
            supervisor.stop()
    return out.getvalue(), process


def test_a_non_essential_child_that_exits_is_reported_and_the_rest_runs_on():
    text, _ = _web_and_a_card_stopped_after_2_s(ProcessSpec("card jcop4", EXIT_3, essential=False))
    assert "card jcop4 exited with status 3; the rest runs on without it" in text
    assert "received SIGTERM; stopping" in text and "stopped web, card jcop4" in text


def test_an_essential_child_that_exits_stops_the_others():
    out = io.StringIO()
    supervisor = Supervisor([ProcessSpec("web", SLEEP), ProcessSpec("worker", EXIT_3)], {}, out=out,
                            stop_timeout=5)
    supervisor.start()
    try:
        assert supervisor.wait(poll=0.05) == 1
    finally:
        if supervisor.running:
            supervisor.stop()
    assert "worker exited with status 3; stopping the others" in out.getvalue()
    assert not supervisor.running


def test_a_child_group_is_killed_only_while_its_leader_is_unreaped(monkeypatch, tmp_path):
    """The supervisor SIGKILLs what is left of a child's process group (a card's own child here) before it
    reaps the leader, never after: once the leader is reaped and its group is empty, the group's id is free
    and another program's new process group can get it (pid_max is 32768 on our CI machines and the suite
    makes tens of thousands of processes). Before, a demo card that exited was reaped at once and its
    group id SIGKILLed at the stack's stop, whatever held that id by then."""
    grandchild_file = tmp_path / "grandchild"
    leaves_a_child = [sys.executable, "-c",
                      "import subprocess, sys; p = subprocess.Popen([sys.executable, '-c', "
                      "'import time; time.sleep(60)']); "
                      f"open({str(grandchild_file)!r}, 'w').write(str(p.pid)); raise SystemExit(3)"]
    calls: list[tuple[int, bool]] = []
    killpg = os.killpg

    def spy(pgid: int, sig: int) -> None:
        calls.append((pgid, Path(f"/proc/{pgid}").exists()))  # alive, or a zombie not reaped yet
        killpg(pgid, sig)

    monkeypatch.setattr(os, "killpg", spy)
    text, card = _web_and_a_card_stopped_after_2_s(ProcessSpec("card desfire", leaves_a_child,
                                                               essential=False))
    assert "card desfire exited with status 3; the rest runs on without it" in text
    grandchild = int(grandchild_file.read_text())
    assert not _alive(grandchild), "the card's own child outlived the stack"
    assert card.pid in {pgid for pgid, _ in calls}
    assert calls and all(existed for _, existed in calls), calls
