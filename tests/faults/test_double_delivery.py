"""The same job delivered twice at the same instant (issue 6, fault matrix): exactly one card write.

Two `python -m readeragent run` processes for one station (an operator started the agent twice: same home,
same reader; a broker redelivery racing the first copy is the same race), both idle on the station queue,
get the same signed job from the real CMS stack at the same instant: the test takes the job the CMS sent
off the queue and pushes it back twice in one LPUSH, so each agent's BRPOP takes one copy. Exactly one
agent runs it; the other's replay ledger claim (one SQLite write transaction in the shared home) fails, so
it answers "refused" (replay) without opening the reader. The virtual card counts every write: one
ChangeKey per DESFire key (PUT KEY per JCOP key set), one WriteData, one CreateApplication; the CMS
records the job once (succeeded) and refuses the replay refusal as not the job's outcome.
"""
from __future__ import annotations

import secrets
import time

import pytest
import redis

from cardsim.desfire import DESFireCard
from cardsim.jcop import JCOP4Card
from readeragent.identity import Identity
from readeragent.ledger import ReplayLedger
from readeragent.monitor import make_report
from readeragent.worker import make_app
from tests.e2e.station import agent_process, stop, wait_started
from tests.e2e.test_pipeline import _api, _order, _wait_job
from tests.support.proof import record

pytestmark = [pytest.mark.pcsc, pytest.mark.vault, pytest.mark.slow, pytest.mark.xdist_group("pcsc")]

FAMILIES = {
    # profile, card, chip type, the writes the job makes: {INS: times}
    # DESFire: ChangeKey x4 (PICC + 3 application keys), WriteData, CreateStdDataFile, CreateValueFile
    # (not CreateApplication: its INS CA is also the UID read's, GET DATA FF CA)
    "desfire": ("campus", lambda: DESFireCard("ev2", picc_key_type="des"), "desfire_ev2",
                {0xC4: 4, 0x3D: 1, 0xCD: 1, 0xCC: 1}),
    # JCOP 4: PUT KEY (the ISD key set), STORE DATA, SET STATUS (SECURED, then CARD_LOCKED)
    "jcop": ("fob", lambda: JCOP4Card(seed=secrets.token_hex(4)), "jcop4", {0xD8: 1, 0xE2: 1, 0xF0: 2}),
}
RESULTS: dict[str, dict] = {}


def _uid(card) -> str:
    return (card.uid if isinstance(card, DESFireCard) else card.identity.uid).hex().upper()


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise TimeoutError(what)


@pytest.mark.parametrize("family", ["desfire", "jcop"])
def test_two_agents_get_the_same_job_at_once_and_the_card_is_written_once(cms_stack, enrolled_station,
                                                                         pcsc_card, family):
    profile, make, chip_type, writes = FAMILIES[family]
    card = make()
    uid = _uid(card)
    code, station_id, home = enrolled_station
    _order(cms_stack, profile, station_id, uid)
    reader = pcsc_card(card, connect=False)
    reader.bridge.remove()
    # The station reports the card while no agent runs: the CMS's job waits on the station queue and is
    # taken off it here, to be handed to both agents at once.
    identity = Identity.load(home)
    report = make_report(identity, "card_presented", reader.reader, uid=uid, chip_type=chip_type,
                         atr=card.atr.hex().upper(), kdd=None if family == "desfire"
                         else card.identity.kdd.hex().upper())
    make_app(cms_stack.broker).send_task("cms.station_report", queue="cms", args=[report])
    client = redis.Redis.from_url(cms_stack.broker)
    queue = f"station.{code}"
    raw = _wait(lambda: client.rpop(queue), 60, f"the CMS sent no job to {queue}:\n{cms_stack.tail()}")

    logs = [home / "agent-a.log", home / "agent-b.log"]
    agents = [agent_process(home, reader.reader, cms_stack.broker, log=log) for log in logs]
    try:
        for agent, log in zip(agents, logs, strict=True):
            wait_started(agent, log)
        reader.bridge.insert()
        # both monitors read the card and report it (the CMS answers "busy": its job is open); the job
        # copies go out once both have shown the card on their status line
        _wait(lambda: all(uid in log.read_text(errors="replace") for log in logs), 60,
              "the agents did not both see the card")
        before = dict(card.ins_counts)
        client.lpush(queue, raw, raw)  # two copies of the same message, in one command

        job = _wait_job(cms_stack, uid)
        # each agent's status line names its last job: one ran it, the other refused it as a replay
        short = job["id"][:8]
        answers = [f"last {short} succeeded", f"last {short} refused (replay)"]
        _wait(lambda: all(any(a in log.read_text(errors="replace") for log in logs) for a in answers), 60,
              "both agents did not answer the job")
    finally:
        for agent in agents:
            stop(agent)
    texts = [log.read_text(errors="replace") for log in logs]
    detail = _api(cms_stack, "GET", f"jobs/{job['id']}/").json()
    assert job["state"] == "succeeded", (detail, texts[0][-3000:], texts[1][-3000:])
    # one copy each, at once (not both taken by one agent in turn)
    assert sorted(sum(a in text for a in answers) for text in texts) == [1, 1], (texts[0][-3000:],
                                                                              texts[1][-3000:])
    ledger = ReplayLedger.in_home(home)
    assert ledger.counts() == {"succeeded": 1}
    ledger.close()
    made = {ins: card.ins_counts.get(ins, 0) - before.get(ins, 0) for ins in writes}
    assert made == writes, made
    jobs = _api(cms_stack, "GET", "jobs/", params={"card_uid": uid}).json()
    jobs = jobs["results"] if isinstance(jobs, dict) else jobs
    assert [j["state"] for j in jobs] == ["succeeded"]
    RESULTS[family] = {"copies": 2, "ran": 1, "refused_replay": 1, "writes": {f"{k:02X}": v for k, v in
                                                                            made.items()}}
    record("fault_double_delivery", {
        "cases": len(RESULTS), "faults_injected": len(RESULTS), "failures_found": 0,
        "cases_detail": [f"{k}: {v}" for k, v in sorted(RESULTS.items())]})
