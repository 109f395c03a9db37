"""Regression for what tests/faults/test_agent_kill.py found: after an agent died mid-job (NoResult) and a
probe listed the application as present, the creates of its files were still unknown (the same probe
could not list the files of an application it did not know existed); the next job must list them again,
never send CreateFile (91DE on every presentation, the card stuck). Pure compiler: no database."""
from __future__ import annotations

from types import SimpleNamespace

from cards.compiler import Held, Ledger, compile_plan
from tests.pipeline.conftest import DESFIRE_SPEC, DESFIRE_UID

DESFIRE = SimpleNamespace(spec=DESFIRE_SPEC, chip_family="desfire")
CARD = SimpleNamespace(uid=DESFIRE_UID, chip_type="desfire_ev2")
ACTIVE = {"picc.0": Held(11, 1), "app.F0A001.0": Held(20, 1), "app.F0A001.1": Held(21, 1),
          "app.F0A001.2": Held(22, 1)}


def test_unknown_file_creates_are_listed_again_before_any_create():
    files = {f"app.F0A001.file.{f['file_no']}.create" for f in DESFIRE_SPEC["applications"][0]["files"]}
    ledger = Ledger(active=dict(ACTIVE), done={"picc.0.change", "app.F0A001.create"},
                    unknown_creates=set(files), probe_required=False)
    plan = compile_plan(CARD, DESFIRE, ledger)
    assert plan.probe
    assert {"op": "desfire.get_file_ids", "label": "probe.files.F0A001"} in plan.steps
    assert not any(step["op"].startswith("desfire.create") for step in plan.steps)
    assert not any(step["op"] == "desfire.authenticate" for step in plan.steps)
