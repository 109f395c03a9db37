"""The agent's own Celery worker: consumes only `station.<code>`, runs each job on the reader, reports back.

JSON only; no result backend (results go back as the CMS task `cms.job_result` on queue "cms");
prefetch 1, acks_late and reject_on_worker_lost, so a job is never lost, and the replay ledger makes
a redelivered one harmless. Remote control, gossip and mingle are off: the worker listens to its
station queue and nothing else.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from celery import Celery

from . import executor, monitor
from .identity import Identity
from .ledger import ReplayLedger
from .readerlock import ReaderLock

log = logging.getLogger(__name__)

RUN_JOB = "station.run_job"
JOB_RESULT = "cms.job_result"
STATION_REPORT = "cms.station_report"
CMS_QUEUE = "cms"


def broker_url(explicit: str | None = None) -> str:
    return explicit or os.environ.get("CMS_BROKER_URL") or "redis://127.0.0.1:6379/0"


def make_app(url: str) -> Celery:
    app = Celery("readeragent", broker=url, set_as_current=False)
    app.conf.update(
        task_serializer="json", accept_content=["json"], result_serializer="json",
        result_backend=None, task_ignore_result=True,
        task_acks_late=True, task_reject_on_worker_lost=True, worker_prefetch_multiplier=1,
        worker_enable_remote_control=False, worker_send_task_events=False,
        broker_connection_retry_on_startup=True, worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        # a killed agent's unacked job comes back after this; the ledger refuses it (replay)
        broker_transport_options={"visibility_timeout": int(os.environ.get("CMS_AGENT_VISIBILITY_S", "300"))},
    )
    return app


@dataclass
class Agent:
    """What the worker task and the monitor share: identity, ledger, reader, and the way to the CMS."""

    identity: Identity
    home: Path
    reader: str | None
    app: Celery
    ledger: ReplayLedger
    # a ReaderLock (flock in the home) in `run`: one card user at a time across agent processes
    card_lock: threading.Lock | ReaderLock = field(default_factory=threading.Lock)
    jobs: dict = field(default_factory=lambda: {"succeeded": 0, "failed": 0, "interrupted": 0, "refused": 0})
    last_job: str = ""
    card_source: Callable[[], tuple] | None = None

    def send(self, name: str, document: dict) -> None:
        self.app.send_task(name, args=[document], queue=CMS_QUEUE)

    def open_card(self):
        """(transport, uid hex, close) for the card in the reader; `card_source` replaces it in tests
        and benchmarks with in-process virtual cards."""
        if self.card_source is not None:
            return self.card_source()
        from cardproto.transport import PyscardTransport

        connection, uid = None, None
        # Like the monitor: a UID read that fails while pcscd powers the card up is read again (a plain
        # GET DATA, nothing on the card changes); without a UID the job is refused as another card's.
        for attempt in range(monitor.PRESENT_READ_ATTEMPTS if self.reader is not None else 0):
            if attempt:
                time.sleep(monitor.PRESENT_READ_PAUSE_S)
            try:
                connection = monitor.connect(self.reader, reset_on_close=True)
            except monitor.ReaderError:
                connection = None
                continue
            uid = monitor.read_uid(connection)
            if uid is not None:
                break
            log.info("card in %s: UID read %d failed before the job", self.reader, attempt + 1)
            _disconnect(connection)
            connection = None
        if connection is None:
            return _NoCard(), "", lambda: None
        return PyscardTransport(connection), uid, lambda: _disconnect(connection)

    def run_on_reader(self, envelope) -> dict:
        """Admit the job (signature, replay ledger, expiry: nothing touches the reader for a refused copy),
        then read the UID of the card in the reader and execute; no card refuses the job (reason card)."""
        started = time.time()
        try:
            refusal = executor.admit(envelope, identity=self.identity, ledger=self.ledger)
        except Exception as exc:  # the ledger file is unusable: run nothing, still answer the CMS
            log.exception("job not admitted")
            return executor.failure_result(envelope, self.identity, exc, started)
        if refusal is not None:
            return refusal
        with self.card_lock:
            try:
                transport, uid, close = self.open_card()
            except Exception as exc:  # the reader vanished: still answer the CMS
                log.exception("cannot open the card")
                self.ledger.finish(envelope["job_id"], "failed")
                return executor.failure_result(envelope, self.identity, exc, started)
            try:
                return executor.execute(envelope, transport, identity=self.identity, ledger=self.ledger,
                                        card_uid=uid, admitted=True)
            except Exception as exc:  # a bug: the job is claimed (never rerun); the CMS must hear why
                log.exception("job failed outside its steps")
                return executor.failure_result(envelope, self.identity, exc, started)
            finally:
                close()

    def handle_job(self, envelope) -> dict:
        result = self.run_on_reader(envelope)
        self.jobs[result["state"]] = self.jobs.get(result["state"], 0) + 1
        reason = (result.get("error") or {}).get("reason")
        self.last_job = f"{str(result.get('job_id'))[:8]} {result['state']}" + (f" ({reason})" if reason
                                                                                 else "")
        self.send(JOB_RESULT, result)
        log.info("job %s: %s, %s steps done", result.get("job_id"), result["state"], result["steps_done"])
        return result


def _disconnect(connection) -> None:
    try:
        connection.disconnect()
    except Exception:  # noqa: S110 - the card may have left
        pass


class _NoCard:
    def transmit(self, apdu: bytes) -> bytes:
        from cardproto.errors import CardRemovedError

        raise CardRemovedError("no card in the reader", apdu=apdu[:5])


def register(agent: Agent) -> None:
    @agent.app.task(name=RUN_JOB, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
    def run_job(envelope: dict) -> None:
        agent.handle_job(envelope)


def status_line(agent: Agent, card_monitor: monitor.CardMonitor | None) -> str:
    s = card_monitor.status if card_monitor is not None else {}
    card = s.get("card") or ("present, no UID" if s.get("present") else "none")
    jobs = " ".join(f"{k} {v}" for k, v in agent.jobs.items())
    return (f"[{time.strftime('%H:%M:%S')}] station {agent.identity.station} | reader {agent.reader} | "
            f"card {card} | jobs: {jobs} | last {agent.last_job or '-'}")


def run(*, home: Path, reader: str | None, broker: str | None, loglevel: str = "WARNING",
        heartbeat_s: float = 30.0) -> None:  # pragma: no cover - run as a process in tests/e2e
    identity = Identity.load(home)
    app = make_app(broker_url(broker))
    picked = monitor.pick_reader(reader)
    agent = Agent(identity, home, picked, app, ReplayLedger.in_home(home), card_lock=ReaderLock(home, picked))
    register(agent)
    card_monitor = monitor.CardMonitor(identity, agent.reader, agent.send, card_lock=agent.card_lock,
                                       heartbeat_s=heartbeat_s)
    tty = sys.stderr.isatty()

    def show() -> None:
        line = status_line(agent, card_monitor)
        sys.stderr.write(("\r" + line[:160].ljust(160)) if tty else line + "\n")
        sys.stderr.flush()

    card_monitor.on_change = show
    card_monitor.start()
    print(f"agent for station {identity.station} on reader {agent.reader!r}, queue {identity.queue}",
          file=sys.stderr, flush=True)
    original = agent.handle_job

    def handle_and_show(envelope):
        try:
            return original(envelope)
        finally:
            show()

    agent.handle_job = handle_and_show
    try:
        app.worker_main(["worker", "-Q", identity.queue, "-P", "solo", "-c", "1",
                         "--prefetch-multiplier", "1", "--without-gossip", "--without-mingle",
                         "--without-heartbeat", "-l", loglevel,
                         "-n", f"agent-{identity.station}@%h"])
    finally:
        card_monitor.stop()
