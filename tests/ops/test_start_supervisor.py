"""The stack's supervisor: an essential child that exits stops the stack; a demo child (a virtual card, an
agent) that exits is reported and the CMS runs on. Real processes, no mocks."""
from __future__ import annotations

import io
import sys
import threading

from cms.stack import ProcessSpec, Supervisor

SLEEP = [sys.executable, "-c", "import time; time.sleep(60)"]
EXIT_3 = [sys.executable, "-c", "raise SystemExit(3)"]


def test_a_non_essential_child_that_exits_is_reported_and_the_rest_runs_on():
    out = io.StringIO()
    supervisor = Supervisor([ProcessSpec("web", SLEEP)], {}, out=out, stop_timeout=5)
    supervisor.start()
    supervisor.launch([ProcessSpec("card jcop4", EXIT_3, essential=False)])
    timer = threading.Timer(2.0, supervisor.request_stop, args=(15,))
    timer.start()
    try:
        assert supervisor.wait(poll=0.05) == 0
    finally:
        timer.cancel()
        if supervisor.running:
            supervisor.stop()
    text = out.getvalue()
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
