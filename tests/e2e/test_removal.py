"""The card leaves the field at every APDU of the DESFire flow, end to end: the job ends interrupted, a
ChangeKey sent but unanswered is in flight and probed on the next presentation (GetKeyVersion, no
authentication; a lost CreateApplication / CreateFile is probed with the ID lists), and the card is put
back until the ledger is whole: every index must end with the card fully provisioned. (Exactly which
steps are done at each index is checked in-process in tests/readeragent/test_executor_desfire.py.)

One stack, one enrolled agent, one vpcd reader; for each index a factory-fresh card (new UID, new
order) is loaded into the same virtual card slot, and pulled after executing the N-th APDU of its
first job (the card changed state, the host never heard).
"""
from __future__ import annotations

import time

import pytest

from cardsim.desfire import DESFireCard

from .station import agent_process, stop, wait_started
from .test_pipeline import LEDGER, _api, _order

pytestmark = [pytest.mark.pcsc, pytest.mark.vault, pytest.mark.slow, pytest.mark.xdist_group("pcsc")]


class FlakyCard(DESFireCard):
    """Leaves the field after executing the `pull_at`-th APDU of the next job (APDUs after the agent's
    GET DATA FF CA; the monitor's FF CA + GetVersion at presentation do not count)."""

    pull_at: int | None = None
    _counting = False
    _seen = 0
    job_apdus = 0

    def transmit(self, apdu: bytes) -> bytes:
        if apdu[:2] == b"\xff\xca":
            self._counting, self._seen = True, 0
        elif self._counting and apdu[1] == 0x60 and self._seen == 0:
            self._counting = False  # the monitor's GetVersion, not a job
        elif self._counting:
            self._seen += 1
            self.job_apdus = self._seen
            if self.pull_at is not None and self._seen == self.pull_at + 1:
                self.pull_at = None
                self.faults.remove_after_executing = self.apdu_count
        return super().transmit(apdu)


def _jobs(stack, uid):
    body = _api(stack, "GET", "jobs/", params={"card_uid": uid}).json()
    return body["results"] if isinstance(body, dict) else body


def _wait(predicate, timeout, what, context=lambda: ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise TimeoutError(f"{what}\n{context()}")


def _context(stack, home, uid):
    """What to read when a wait fails: the card's jobs, the agent's log and the CMS stack's log."""
    agent_log = (home / "agent.log").read_text(errors="replace") if (home / "agent.log").exists() else ""
    jobs = [{k: j.get(k) for k in ("id", "state", "error", "created_at")} for j in _jobs(stack, uid)]
    return (f"jobs of {uid}: {jobs}\n--- agent.log ({home / 'agent.log'}) ---\n{agent_log[-4000:]}\n"
            f"--- stack.log ({stack.log}) ---\n{stack.tail(4000)}")


OPEN = ("created", "dispatched", "running", "pending")


def test_removal_at_every_apdu_of_the_desfire_flow(cms_stack, enrolled_station, pcsc_card):
    code, station_id, home = enrolled_station
    card = FlakyCard("ev2", picc_key_type="des")
    reader = pcsc_card(card, connect=False)
    reader.bridge.remove()
    agent = agent_process(home, reader.reader, cms_stack.broker)
    outcomes = {}
    try:
        wait_started(agent, home / "agent.log")
        job_apdus = None
        for index in [None, *range(64)]:  # a clean run first: it tells how many APDUs the job has
            if job_apdus is not None and index >= job_apdus:
                break
            time.sleep(2.2)  # pcscd notices a removal at its next poll
            card.load_state(DESFireCard("ev2", picc_key_type="des").to_state())
            uid = card.uid.hex().upper()
            _order(cms_stack, "campus", station_id, uid)
            card.pull_at = index
            reader.bridge.insert()
            first = _wait(lambda uid=uid: [j for j in _jobs(cms_stack, uid) if j["state"] not in OPEN],
                          60, f"index {index}: no job finished",
                          lambda uid=uid: _context(cms_stack, home, uid))[-1]
            if index is None:
                assert first["state"] == "succeeded", first
                job_apdus = card.job_apdus
                reader.bridge.remove()
                continue
            assert first["state"] == "interrupted", (index, first)
            presentations = 1
            while True:  # put the card back until its last job succeeded and nothing is open
                time.sleep(2.2)
                reader.bridge.insert()
                presentations += 1

                def settled(uid=uid, count=presentations):
                    jobs = _jobs(cms_stack, uid)
                    if any(j["state"] in OPEN for j in jobs) or len(jobs) < count:
                        return None
                    return jobs
                jobs = _wait(settled, 60, f"index {index}: jobs did not settle",
                             lambda uid=uid: _context(cms_stack, home, uid))
                if jobs[0]["state"] != "succeeded" or presentations > 4:
                    break
                ledger = cms_stack.shell(LEDGER.replace("@UID@", repr(uid)))
                if ledger and all(state == "active" for *_, state in ledger) and len(ledger) == 4:
                    break
                reader.bridge.remove()
            reader.bridge.remove()
            held = card.keys_held()
            whole = [k["version"] for k in held.get("f0d001", [])] == [1, 1, 1] \
                and held["000000"][0]["family"] == "aes"
            outcomes[index] = ([j["state"] for j in reversed(jobs)], whole, jobs[0].get("error"))
    finally:
        stop(agent)
        print(outcomes)
    assert job_apdus and len(outcomes) == job_apdus
    for index, (states, whole, error) in outcomes.items():
        assert states[0] == "interrupted", (index, states)
        # put back, every card ends provisioned: resumed, or probed first (a ChangeKey in flight ->
        # GetKeyVersion; a CreateApplication / CreateFile whose answer was lost -> the ID lists)
        assert states[-1] == "succeeded" and whole, (index, states, error)
    probed = [index for index, (states, _, _) in outcomes.items() if len(states) == 3]
    assert len(probed) >= 2, f"too few indices went through a probe: {outcomes}"
