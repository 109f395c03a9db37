"""The station's replay ledger is the one guard of "a job runs at most once on this station" that works
across agent processes (`readeragent run` started twice on one home, a broker redelivery racing the first
copy): the claim is atomic across processes, comes before the expiry and before the reader is opened."""
from __future__ import annotations

import multiprocessing
import threading
import time
import uuid

from readeragent import protocol
from readeragent.executor import execute
from readeragent.ledger import ReplayLedger
from readeragent.readerlock import ReaderLock
from readeragent.worker import Agent, make_app

from . import flows
from .conftest import VirtualTransport

PROCESSES, JOBS = 6, 12


def _claim_all(path: str, job_ids: list[str], barrier, out) -> None:
    barrier.wait(timeout=30)  # and open the file at the same instant (two agents started at once)
    ledger = ReplayLedger(path)
    won = []
    for job_id in job_ids:
        barrier.wait(timeout=30)  # every process claims the same id at the same instant
        if ledger.claim(job_id, card_uid="04782E21801D80", expires_at=int(time.time()) + 30):
            won.append(job_id)
    ledger.close()
    out.put(won)


def test_processes_claiming_the_same_job_at_once_admit_exactly_one(tmp_path):
    path = tmp_path / "jobs.sqlite3"  # not there yet: every process opens (creates, switches to WAL) at once
    job_ids = [str(uuid.uuid4()) for _ in range(JOBS)]
    context = multiprocessing.get_context("fork")
    barrier, out = context.Barrier(PROCESSES), context.Queue()
    workers = [context.Process(target=_claim_all, args=(str(path), job_ids, barrier, out))
               for _ in range(PROCESSES)]
    for worker in workers:
        worker.start()
    won = [job for _ in workers for job in out.get(timeout=60)]
    for worker in workers:
        worker.join(30)
        assert worker.exitcode == 0
    assert sorted(won) == sorted(job_ids)  # each id won by exactly one process, none by two
    ledger = ReplayLedger(path)
    assert ledger.counts() == {"running": JOBS}
    ledger.close()


def _open_at_once(path: str, barrier, out) -> None:
    barrier.wait(timeout=30)
    try:
        ReplayLedger(path).close()
        out.put("ok")
    except Exception as exc:  # noqa: BLE001 - reported by the assertion
        out.put(repr(exc))


def test_agents_starting_at_once_on_a_new_home_all_open_the_ledger(tmp_path):
    """Before: "database is locked" from PRAGMA journal_mode=WAL (about 1 open in 20 failed so)."""
    context = multiprocessing.get_context("fork")
    answers = []
    for round_ in range(10):
        barrier, out = context.Barrier(PROCESSES), context.Queue()
        path = str(tmp_path / f"jobs-{round_}.sqlite3")
        workers = [context.Process(target=_open_at_once, args=(path, barrier, out)) for _ in range(PROCESSES)]
        for worker in workers:
            worker.start()
        answers += [out.get(timeout=60) for _ in workers]
        for worker in workers:
            worker.join(30)
    assert answers == ["ok"] * 10 * PROCESSES, [a for a in answers if a != "ok"]


def test_an_expired_copy_of_a_job_already_run_is_a_replay_not_an_expiry(cms, identity, ledger):
    card = flows.make_desfire_card()
    envelope = cms.envelope(flows.desfire_steps(), flows.desfire_keys(), uid=flows.DESFIRE_UID, ttl=5)
    assert execute(envelope, VirtualTransport(card), identity=identity, ledger=ledger,
                   card_uid=flows.DESFIRE_UID)["state"] == "succeeded"
    sent = card.apdu_count
    copy = execute(envelope, VirtualTransport(card), identity=identity, ledger=ledger,
                   card_uid=flows.DESFIRE_UID, now=envelope["expires_at"] + 60)
    assert copy["state"] == "refused" and copy["error"]["reason"] == "replay", copy["error"]
    assert card.apdu_count == sent
    assert ledger.state(envelope["job_id"]) == "succeeded"
    protocol.verify_signature(copy, identity.sign_private_key.public_key(), "result")


def test_an_expired_job_never_received_is_refused_as_expired_and_not_recorded(cms, identity, ledger):
    card = flows.make_desfire_card()
    envelope = cms.envelope(flows.desfire_steps(), flows.desfire_keys(), uid=flows.DESFIRE_UID, ttl=5)
    result = execute(envelope, VirtualTransport(card), identity=identity, ledger=ledger,
                     card_uid=flows.DESFIRE_UID, now=envelope["expires_at"] + 1)
    assert result["error"]["reason"] == "expired" and card.apdu_count == 0
    assert ledger.state(envelope["job_id"]) is None


def test_a_copy_refused_as_a_replay_never_opens_the_reader(cms, identity, ledger):
    card = flows.make_desfire_card()
    opened = []

    def reader():
        opened.append(1)
        return VirtualTransport(card), flows.DESFIRE_UID, lambda: None

    agent = Agent(identity, ledger.path.parent, None, make_app("redis://127.0.0.1:6379/14"), ledger,
                  card_source=reader)
    envelope = cms.envelope(flows.desfire_steps(), flows.desfire_keys(), uid=flows.DESFIRE_UID)
    assert agent.run_on_reader(envelope)["state"] == "succeeded"
    sent = card.apdu_count
    copy = agent.run_on_reader(envelope)
    assert copy["error"]["reason"] == "replay"
    assert opened == [1] and card.apdu_count == sent


def _hold(home: str, reader: str, held, release, out) -> None:
    with ReaderLock(home, reader):
        held.set()
        release.wait(30)
        out.put(time.monotonic())


def test_the_reader_lock_holds_across_processes(tmp_path):
    context = multiprocessing.get_context("fork")
    held, release, out = context.Event(), context.Event(), context.Queue()
    other = context.Process(target=_hold, args=(str(tmp_path), "Virtual PCD 00 00", held, release, out))
    other.start()
    try:
        assert held.wait(30)
        got = threading.Event()
        acquired: list[float] = []

        def take():
            with ReaderLock(tmp_path, "Virtual PCD 00 00"):
                acquired.append(time.monotonic())
                got.set()

        taker = threading.Thread(target=take)
        taker.start()
        assert not got.wait(0.5)  # blocked while the other process holds the reader
        with ReaderLock(tmp_path, "Virtual PCD 00 01"):  # another reader is another lock
            pass
        release.set()
        taker.join(30)
        assert acquired and acquired[0] >= out.get(timeout=30)
    finally:
        release.set()
        other.join(30)
    assert other.exitcode == 0
