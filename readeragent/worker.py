"""The agent's own Celery worker: consumes only `station.<code>`, runs each job on the reader, reports back.

JSON only; no result backend (results go back as the CMS task `cms.job_result` on queue "cms");
prefetch 1, acks_late and reject_on_worker_lost, so a job is never lost, and the replay ledger makes
a redelivered one harmless. Remote control, gossip and mingle are off: the worker listens to its
station queue and nothing else.

A result is kept in the ledger's outbox before it is published: one the broker could not take goes
as soon as it can (a thread tries every 2 s, and every (re)connection of the consumer), and after a
reconnect the recent ones go again, since a broker restarted without persistence lost what it held
(tests/faults/test_redis_restart.py). A broker that went away and came back while a job held the
consumer's event loop is noticed by the publishes and the consumer is made to reconnect.
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

from . import executor, keyroll, monitor
from .identity import Identity
from .ledger import ReplayLedger
from .readerlock import ReaderLock

log = logging.getLogger(__name__)

RUN_JOB = "station.run_job"
JOB_RESULT = "cms.job_result"
STATION_REPORT = "cms.station_report"
CMS_QUEUE = "cms"
OUTBOX_FLUSH_S = 2.0
BROKER_WATCH_S = 1.0


def broker_url(explicit: str | None = None) -> str:
    return explicit or os.environ.get("CMS_BROKER_URL") or "redis://127.0.0.1:6379/0"


def make_app(url: str) -> Celery:
    # fixups=[]: Celery's Django fix-up would otherwise run django.setup() in the agent whenever
    # DJANGO_SETTINGS_MODULE is in its environment (a station started from the CMS's shell, runstack's
    # demo, the e2e tests): every CMS model loaded, +50 MiB and more CPU per job, in a process that
    # must know nothing of the CMS.
    app = Celery("readeragent", broker=url, set_as_current=False, fixups=[])
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

    _outbox_lock: threading.Lock = field(default_factory=threading.Lock)
    broker_connections: int = 0
    # when a publish last failed, and when one next went through (0: not since the consumer connected)
    broker_failed_at: float = 0.0
    broker_back_at: float = 0.0

    def send(self, name: str, document: dict) -> None:
        try:
            # argsrepr: a short label instead of Celery's saferepr of the whole document in the message
            # headers (0.2 ms of CPU per result, ~5% of the agent's work on a job; bench/agent.py)
            label = document.get("job_id") or document.get("type") or ""
            self.app.send_task(name, args=[document], queue=CMS_QUEUE, argsrepr=f"[<{name} {label}>]",
                               kwargsrepr="{}")
        except Exception:
            self.broker_failed_at = time.time()
            raise
        if self.broker_failed_at and not self.broker_back_at:
            self.broker_back_at = time.time()

    def broker_came_back(self) -> bool:
        """A publish failed and a later one went through since the consumer last connected: the broker
        was away. The consumer may not have noticed (its connection dropped and came back while a job
        held its event loop; kombu then keeps a dead registration and consumes nothing), so it must
        reconnect."""
        return bool(self.broker_failed_at and self.broker_back_at >= self.broker_failed_at)

    def deliver_result(self, result: dict) -> bool:
        """Keep the signed result in the ledger's outbox, then publish it; True if the broker took it.
        One it did not take (the broker down) stays unsent and goes with the next flush."""
        with self._outbox_lock:
            job_id = result.get("job_id")
            if isinstance(job_id, str) and job_id:
                self.ledger.outbox_put(job_id, result)
            return self._publish(result)

    def _publish(self, result: dict) -> bool:
        job_id = result.get("job_id") if isinstance(result.get("job_id"), str) else None
        try:
            self.send(JOB_RESULT, result)
        except Exception as exc:  # kombu's OperationalError and the socket errors under it
            log.warning("result of job %s kept in the outbox: the broker did not take it (%s)", job_id,
                        exc.__class__.__name__)
            if job_id:
                self.ledger.outbox_failed(job_id)
            return False
        if job_id:
            self.ledger.outbox_sent(job_id)
        return True

    def flush_outbox(self, *, recent: bool = False) -> int:
        """Publish the results the broker never took, oldest first, until one fails; with `recent`, also
        those it took inside their resend window whose job ran on the card (after a reconnect: a broker
        restarted without persistence lost what it held; the CMS refuses a copy it already applied as a
        replay). Refusals are not sent twice (a replay refusal counts as a delivery at the CMS).
        Returns how many went."""
        with self._outbox_lock:
            documents = self.ledger.outbox_unsent()
            if recent:
                unsent = {d.get("job_id") for d in documents}
                documents += [d for d in self.ledger.outbox_recent()
                              if d.get("job_id") not in unsent and d.get("state") != "refused"]
            sent = 0
            for document in documents:
                if not self._publish(document):
                    break
                sent += 1
        if sent:
            log.info("outbox: %d result(s) sent%s", sent, " again after a broker reconnect" if recent else "")
        return sent

    def on_broker_connected(self) -> None:
        """The worker's consumer (re)connected to the broker: send what is owed (every reconnect after
        the first also resends the recent results the broker may have lost)."""
        self.broker_connections += 1
        self.broker_failed_at = self.broker_back_at = 0.0
        try:
            self.flush_outbox(recent=self.broker_connections > 1)
        except Exception:  # the outbox must never stop the worker from consuming
            log.exception("outbox flush failed")

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

    def handle_key_roll(self, document) -> dict:
        """A CMS key roll (readeragent.keyroll): pin the new job-signing key version if the roll is
        authentic, and tell the CMS either way (one the broker did not take: the CMS sends it again)."""
        with self.card_lock:  # no job is being checked while the trusted keys change
            answer = keyroll.apply_key_roll(document, self.identity, self.home)
        try:
            self.send(keyroll.KEY_ROLL_RESULT, answer)
        except Exception as exc:  # the pin stands; the CMS resends the roll, which then just confirms
            log.warning("key roll answer not sent: %s", exc.__class__.__name__)
        return answer

    def handle_job(self, envelope) -> dict:
        result = self.run_on_reader(envelope)
        self.jobs[result["state"]] = self.jobs.get(result["state"], 0) + 1
        reason = (result.get("error") or {}).get("reason")
        self.last_job = f"{str(result.get('job_id'))[:8]} {result['state']}" + (f" ({reason})" if reason
                                                                                 else "")
        self.deliver_result(result)
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
    # shared=False: the task (a closure over this agent) belongs to this app only; a shared task is added
    # to every Celery app made later in the process, where it would run with this agent's identity and
    # ledger (two agents in one process: tests, bench/agent.py)
    @agent.app.task(name=RUN_JOB, acks_late=True, reject_on_worker_lost=True, ignore_result=True,
                    shared=False)
    def run_job(envelope: dict) -> None:
        agent.handle_job(envelope)

    @agent.app.task(name=keyroll.KEY_ROLL, acks_late=True, reject_on_worker_lost=True, ignore_result=True,
                    shared=False)
    def key_roll(document: dict) -> None:
        agent.handle_key_roll(document)

    from celery import bootsteps

    class BrokerWatch(bootsteps.StartStopStep):
        """Started with the consumer each time it (re)connects to the broker: sends what the outbox owes,
        then checks every second, in the consumer's own event loop, whether the broker went away and
        came back behind the consumer's back; if so it raises a connection error there, which makes
        Celery's consumer reconnect (found by tests/faults/test_redis_restart.py: Redis restarted while
        the agent ran a job left the agent connected but consuming nothing)."""

        requires = ("celery.worker.consumer.tasks:Tasks",)

        def __init__(self, parent, **kwargs) -> None:
            super().__init__(parent, **kwargs)
            self.tref = None

        def start(self, consumer) -> None:
            agent.on_broker_connected()
            if consumer.timer is not None:
                self.tref = consumer.timer.call_repeatedly(BROKER_WATCH_S, self.check)

        def check(self) -> None:
            if agent.broker_came_back():
                log.warning("the broker was away while the consumer held its connection: reconnecting")
                raise ConnectionResetError("broker outage seen by a publish; the consumer reconnects")

        def stop(self, consumer) -> None:
            if self.tref is not None:
                self.tref.cancel()
                self.tref = None

        shutdown = stop

    agent.app.steps["consumer"].add(BrokerWatch)


def flush_outbox_every(agent: Agent, stopping: threading.Event, seconds: float = OUTBOX_FLUSH_S) -> None:
    """A thread's loop: results left unsent (the broker was down when they were made) go as soon as the
    broker takes them, even if the consumer never noticed the outage."""
    while not stopping.wait(seconds):
        try:
            if agent.ledger.outbox_counts()["unsent"]:
                agent.flush_outbox()
        except Exception:  # noqa: BLE001 - try again at the next tick
            log.exception("outbox flush failed")


def start_worker(agent: Agent, *, loglevel: str = "WARNING", name: str = "agent") -> int:
    """Consume the station's queue until a signal stops the worker (SIGTERM: warm shutdown, the job
    in hand finishes first): solo pool, prefetch 1, no gossip, mingle or heartbeat (nothing else
    listens to a station), built directly rather than through the `celery worker` command line, whose
    sub-commands (shell, amqp repl, graph...) cost a station ~11 MiB it never uses. Returns the exit code."""
    from celery.utils.nodenames import default_nodename, host_format

    worker = agent.app.Worker(
        queues=[agent.identity.queue], pool_cls="solo", concurrency=1, prefetch_multiplier=1,
        without_gossip=True, without_mingle=True, without_heartbeat=True, loglevel=loglevel, quiet=True,
        hostname=host_format(default_nodename(f"{name}-{agent.identity.station}@%h")))
    worker.start()
    return worker.exitcode or 0


def status_line(agent: Agent, card_monitor: monitor.CardMonitor | None) -> str:
    s = card_monitor.status if card_monitor is not None else {}
    card = s.get("card") or ("present, no UID" if s.get("present") else "none")
    if s.get("report_waiting"):
        card += " (report waiting for the broker)"
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
    stopping = threading.Event()
    threading.Thread(target=flush_outbox_every, args=(agent, stopping), name="outbox", daemon=True).start()
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
        start_worker(agent, loglevel=loglevel)
    finally:
        stopping.set()
        card_monitor.stop()
