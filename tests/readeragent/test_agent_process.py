"""The agent as a process of its own: its worker starts without the `celery worker` command line, without
Django (even with DJANGO_SETTINGS_MODULE in its environment, as runstack's demo and the e2e tests give it),
runs a job from its queue on real Redis, and stops warm on SIGTERM."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

from tests.e2e.station import CmsQueue, start_redis, stop

from . import flows

ROOT = Path(__file__).resolve().parents[2]

CHILD = r"""
import json, os, sys, threading
from pathlib import Path
from readeragent.__main__ import forbid_django
forbid_django()
from readeragent.identity import Identity
from readeragent.ledger import ReplayLedger
from readeragent.worker import Agent, make_app, register, start_worker
from tests.readeragent import flows

home = Path(sys.argv[1])
identity = Identity.load(home)
agent = Agent(identity, home, None, make_app(sys.argv[2]), ReplayLedger.in_home(home),
              card_source=lambda: (flows.make_desfire_card(), flows.DESFIRE_UID, lambda: None))
register(agent)
handle = agent.handle_job

def handle_job(envelope):
    result = handle(envelope)
    django = sorted(m for m, module in sys.modules.items() if m.split(".")[0] == "django" and module)
    rss = [line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmRSS")]
    print("AGENT " + json.dumps({"state": result["state"], "rss": rss[0] if rss else "",
                                 "django": django,
                                 "click_repl": "click_repl" in sys.modules}), flush=True)
    threading.Timer(0.3, os.kill, (os.getpid(), 15)).start()
    return result

agent.handle_job = handle_job
sys.exit(start_worker(agent, loglevel="WARNING", name="test"))
"""


def test_agent_worker_runs_a_job_without_django_or_the_celery_cli(tmp_path, identity, cms):
    home = tmp_path / "agent"
    identity.save(home)
    broker, redis = start_redis(tmp_path / "redis")
    queue = CmsQueue(broker)
    try:
        envelope = cms.envelope(flows.desfire_steps(), flows.desfire_keys(), uid=flows.DESFIRE_UID,
                                job_id=str(uuid.uuid4()))
        from readeragent.worker import RUN_JOB, make_app

        make_app(broker).send_task(RUN_JOB, args=[envelope], queue=identity.queue)
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "cms.settings", "PYTHONPATH": str(ROOT)}
        done = subprocess.run([sys.executable, "-c", CHILD, str(home), broker], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120)
        lines = [line[6:] for line in done.stdout.splitlines() if line.startswith("AGENT ")]
        assert done.returncode == 0 and lines, done.stdout[-2000:] + done.stderr[-3000:]
        seen = json.loads(lines[0])
        assert seen["state"] == "succeeded", seen
        assert seen["django"] == [], f"the agent imported {seen['django']}"
        assert not seen["click_repl"], "the worker was started through the celery command line"
        print(seen["rss"])
        result = queue.next("cms.job_result", timeout=10)
        assert result["job_id"] == envelope["job_id"] and result["state"] == "succeeded"
    finally:
        queue.close()
        stop(redis)


def test_agent_app_installs_no_django_fixup(monkeypatch):
    """Without `fixups=[]` Celery's Django fix-up runs django.setup() in the worker whenever
    DJANGO_SETTINGS_MODULE is set (+50 MiB per agent, the CMS's models loaded in a station)."""
    from readeragent.worker import make_app

    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "cms.settings")
    app = make_app("redis://127.0.0.1:6379/14")
    assert app.fixups == [] and app._fixups == []
