"""Virtual cards for the fault matrix that do something at a given APDU of a job, and the checks the fault
tests share (the card's jobs, its ledger, waits that fail with what was seen).

`Acting` counts a job's APDUs as tests/faults/test_agent_kill.py's `Killing` does (after the agent's GET
DATA FF CA; the monitor's FF CA is followed by its GetVersion 90 60) and, after executing the n-th, calls
`actions[n]()` (seal OpenBao, restart PostgreSQL, ...): the card has changed, its answer is on its way to
the agent. Authentications the card refused with 91AE (a wrong key) are counted.
"""
from __future__ import annotations

import time
from collections.abc import Callable

from cardsim.desfire import DESFireCard
from tests.e2e.test_pipeline import AID, _api

OPEN = ("created", "dispatched", "running", "pending")
APPLICATION_ABSENT = "91A0"  # a probe's SelectApplication: never created


class ActingDESFire(DESFireCard):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.actions: dict[int, Callable[[], None]] = {}
        self.acted: list[int] = []
        self._counting = False
        self._seen = 0
        self.job_apdus = 0
        self.wrong_key_auths = 0
        self.pull_after_ins: int | None = None  # leave the field after executing the next APDU with this INS

    def transmit(self, apdu: bytes) -> bytes:
        action = None
        if apdu[:2] == b"\xff\xca":
            self._counting, self._seen = True, 0
        elif self._counting and apdu[1] == 0x60 and self._seen == 0:
            self._counting = False  # the monitor's GetVersion, not a job
        elif self._counting:
            self._seen += 1
            self.job_apdus = self._seen
            action = self.actions.pop(self._seen, None)
            if self.pull_after_ins is not None and len(apdu) > 1 and apdu[1] == self.pull_after_ins:
                self.pull_after_ins = None
                self.faults.remove_after_executing = self.apdu_count  # this one: executed, never answered
        answer = super().transmit(apdu)
        if answer[-2:] == b"\x91\xae":
            self.wrong_key_auths += 1
        if action is not None:
            action()
            self.acted.append(self._seen)
        return answer

    def fresh(self) -> str:
        """Factory state again (a new UID); returns the UID."""
        self.load_state(fresh_desfire_state())
        self.wrong_key_auths, self.acted, self.job_apdus = 0, [], 0
        return self.uid.hex().upper()

    def holds_ledger(self) -> bool:
        """The campus profile's keys on the card: the application's three keys at version 1, an AES PICC
        master key (the transport 2K3DES key replaced)."""
        held = self.keys_held()
        return [k["version"] for k in held.get(AID.lower(), [])] == [1, 1, 1] \
            and held["000000"][0]["family"] == "aes"


def fresh_desfire_state() -> dict:
    return DESFireCard("ev2", picc_key_type="des").to_state()


def jobs_of(stack, uid: str) -> list[dict] | None:
    """The card's jobs, newest first; None while the API answers 503 (a backing service is down: the
    database restarting); any other answer than 200 or 503 fails the test (no 500 during an outage)."""
    response = _api(stack, "GET", "jobs/", params={"card_uid": uid})
    if response.status_code == 503:
        return None
    assert response.status_code == 200, (response.status_code, response.text[:300])
    body = response.json()
    return body["results"] if isinstance(body, dict) else body


def closed_jobs(stack, uid: str) -> list[dict]:
    """The card's jobs that are no longer open, newest first (none while the API answers 503)."""
    return [j for j in jobs_of(stack, uid) or [] if j["state"] not in OPEN]


def card_of(stack, uid: str) -> dict | None:
    body = _api(stack, "GET", "cards/", params={"uid": uid}).json()
    rows = body["results"] if isinstance(body, dict) else body
    return next((c for c in rows if c["uid"] == uid), None)


def ledger_of(stack, uid: str) -> list:
    """The card's key versions as tests/e2e/test_pipeline.py's LEDGER prints them ([role, key_no, number,
    state], sorted), from the API (a `manage.py shell` costs seconds of CPU per call)."""
    response = _api(stack, "GET", "key-slots/", params={"card_uid": uid, "limit": 100})
    assert response.status_code == 200, (response.status_code, response.text[:300])
    body = response.json()
    slots = body["results"] if isinstance(body, dict) else body
    return sorted([s["role"], s["key_no"], v["number"], v["state"]] for s in slots for v in s["versions"])


AUDIT = """
import json
from audit.models import AuditEvent
rows = AuditEvent.objects.filter(card_uid=@UID@, action=@ACTION@).order_by("sequence")
print("E2E " + json.dumps([(e.details or {}).get("reason") for e in rows]))
"""


def audit_reasons(stack, uid: str, action: str) -> list:
    """The reasons of the card's audit events with `action`, in order (read in `manage.py shell`: the
    API's audit trail is for people with the audit permission, not the MES service account)."""
    return stack.shell(AUDIT.replace("@UID@", repr(uid)).replace("@ACTION@", repr(action)))


def present(stack, reader, uid: str, count: int) -> list[dict]:
    """Present the card once more and wait until the CMS has dealt with it: its `count`-th job made and
    settled, or nothing to send (the CMS worker's log names the card: a result that came late may have made
    the ledger whole after the caller read it), or the card refused as quarantined. The card's jobs, newest
    first."""
    marker = f"'status': 'nothing_to_do', 'card': '{uid}'".encode()
    since = stack.log.stat().st_size  # only what the stack logs from now on is read, not the whole log
    time.sleep(2.2)  # the monitor reports a card only after it saw the reader empty
    reader.bridge.insert()

    def nothing_to_do() -> bool:
        with stack.log.open("rb") as log:
            log.seek(since)
            return marker in log.read()

    def dealt_with():
        jobs = jobs_of(stack, uid)
        if jobs is None or any(j["state"] in OPEN for j in jobs):
            return None
        if len(jobs) >= count or nothing_to_do() or (card_of(stack, uid) or {}).get("state") == "quarantined":
            return jobs
        return None

    try:
        return wait_for(dealt_with, 60, f"{uid}: presentation {count} was not dealt with: "
                                        f"jobs {jobs_of(stack, uid)}\n{stack.tail(4000)}")
    finally:
        reader.bridge.remove()


def present_until_whole(stack, reader, uid: str, *, card: ActingDESFire | None = None, most: int = 4,
                        slots: int = 4) -> tuple[list[dict], list, int]:
    """Present the card again (probe, resume) until its ledger is whole (and `card` holds it) or `most`
    presentations did not do it; stops at a job that failed other than a probe learning that an application
    is absent (91A0). Returns (jobs oldest first, ledger, presentations made)."""
    made = 0
    jobs = jobs_of(stack, uid) or []
    ledger = ledger_of(stack, uid)
    while not (whole(ledger, slots) and (card is None or card.holds_ledger())) and made < most:
        made += 1
        jobs = present(stack, reader, uid, len(jobs) + 1)
        ledger = ledger_of(stack, uid)
        if jobs[0]["state"] != "succeeded" and (jobs[0].get("error") or {}).get("sw") != APPLICATION_ABSENT:
            break
    return list(reversed(jobs)), ledger, made


def wait_for(predicate, timeout: float, what: str, poll: float = 0.3):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise TimeoutError(what)


def settled(stack, uid: str, count: int) -> list[dict] | None:
    """The card's jobs (newest first) once there are `count` and none is open."""
    jobs = jobs_of(stack, uid)
    if jobs is None:
        return None
    return None if any(j["state"] in OPEN for j in jobs) or len(jobs) < count else jobs


def whole(ledger: list, slots: int = 4) -> bool:
    """One active version per slot, each slot once, every version 1 (none lost, none duplicated)."""
    return len(ledger) == slots and len({(role, key_no) for role, key_no, *_ in ledger}) == slots \
        and all(state == "active" and number == 1 for _, _, number, state in ledger)
