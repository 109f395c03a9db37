"""A card_presented report the broker did not take is owed while that card stays in the reader: the monitor
makes it again (fresh nonce and time, signed anew) every PRESENTED_RETRY_S until the broker takes it, and
drops it when the card leaves or another is presented. Before, it was logged and forgotten: the operator had
to pull the card and present it again after a Redis outage (issue 6's closing note). The real-parts case is
tests/faults/test_redis_restart.py::test_card_presented_while_redis_is_down_is_reported_when_it_is_back."""
from __future__ import annotations

import threading

import pytest

from readeragent import monitor, protocol, worker

from . import flows
from .test_monitor import PyscardLike

READER = "Virtual PCD 00 00"


class _Connection(PyscardLike):
    def disconnect(self) -> None:
        pass


class Broker:
    """The monitor's `send`: records every document it was handed; raises like kombu while down."""

    def __init__(self) -> None:
        self.up = False
        self.tried: list[dict] = []
        self.taken: list[dict] = []

    def __call__(self, name: str, document: dict) -> None:
        assert name == "cms.station_report"
        self.tried.append(document)
        if not self.up:
            raise ConnectionRefusedError(111, "Connection refused")
        self.taken.append(document)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def station(identity, monkeypatch):
    card = flows.make_desfire_card()
    monkeypatch.setattr(monitor, "connect", lambda reader: _Connection(card))
    broker, clock = Broker(), Clock()
    watcher = monitor.CardMonitor(identity, READER, broker, card_lock=threading.Lock())
    watcher.clock = clock
    return watcher, card, broker, clock


def _presented(documents: list[dict]) -> list[dict]:
    return [d for d in documents if d["type"] == "card_presented"]


def test_report_is_kept_while_the_broker_does_not_take_it(station):
    watcher, card, broker, clock = station
    watcher._presented(card.atr)
    for _ in range(5):
        clock.now += monitor.PRESENTED_RETRY_S
        assert watcher.retry_owed() is False
    assert len(broker.tried) == 6 and broker.taken == []
    assert {d["uid"] for d in broker.tried} == {flows.DESFIRE_UID}
    assert watcher.status["report_waiting"] is True and watcher.status["errors"] == 6
    assert watcher._owed == {"uid": flows.DESFIRE_UID, "atr": card.atr.hex().upper(),
                             "chip_type": "desfire_ev2", "kdd": None}


def test_report_goes_fresh_once_the_broker_is_back(station, identity, monkeypatch, caplog):
    watcher, card, broker, clock = station
    watcher._presented(card.atr)
    [first] = broker.tried
    wall = monitor.time.time
    monkeypatch.setattr(monitor.time, "time", lambda: wall() + 90)  # the broker came back 90 s later
    clock.now += monitor.PRESENTED_RETRY_S
    broker.up = True
    with caplog.at_level("INFO", logger=monitor.__name__):
        assert watcher.retry_owed() is True
    [sent] = broker.taken
    # made again, not the old document resent: new nonce and time (the CMS's skew check and presentation
    # key), the same card, and a signature over the new document
    assert sent["nonce"] != first["nonce"] and sent["at"] >= first["at"] + 90
    assert {k: sent[k] for k in ("type", "uid", "atr", "chip_type", "station", "reader")} == \
        {k: first[k] for k in ("type", "uid", "atr", "chip_type", "station", "reader")}
    protocol.verify_signature(sent, identity.sign_private_key.public_key(), "report")
    assert watcher.status["report_waiting"] is False and watcher._owed is None
    assert [r.message for r in caplog.records if "after the broker came back" in r.message] == [
        f"card {flows.DESFIRE_UID} in {READER} reported after the broker came back (try 2, 2 s after it was "
        "presented)"]
    clock.now += 10 * monitor.PRESENTED_RETRY_S
    assert watcher.retry_owed() is False and len(broker.tried) == 2  # sent once, nothing owed any more


def test_removal_drops_the_owed_report(station):
    watcher, card, broker, clock = station
    watcher._presented(card.atr)
    broker.up = True
    watcher._removed()
    assert watcher.status["report_waiting"] is False
    clock.now += monitor.PRESENTED_RETRY_S
    assert watcher.retry_owed() is False
    assert [d["type"] for d in broker.taken] == ["card_removed"]


def test_another_card_drops_the_owed_report(station, monkeypatch):
    watcher, card, broker, clock = station
    watcher._presented(card.atr)
    other = flows.make_jcop_card()
    monkeypatch.setattr(monitor, "connect", lambda reader: _Connection(other))
    broker.up = True
    watcher._presented(other.atr)
    clock.now += monitor.PRESENTED_RETRY_S
    assert watcher.retry_owed() is False
    assert [d["uid"] for d in _presented(broker.taken)] == [flows.jcop_uid(other)]


def test_not_retried_faster_than_the_pace(station):
    watcher, card, broker, clock = station
    watcher._presented(card.atr)
    start = clock.now
    tries_at = []
    while clock.now < start + 10:  # the run loop's quiet ticks, far more often than the pace
        clock.now += 0.1
        before = len(broker.tried)
        watcher.retry_owed()
        if len(broker.tried) > before:
            tries_at.append(round(clock.now - start, 1))
    assert tries_at == [2.0, 4.0, 6.0, 8.0, 10.0]


def test_pace_counts_from_the_end_of_a_slow_try(station):
    """A broker that is down may take its connection retries to refuse: the next try is a full pace after
    the last one gave up, not right after it."""
    watcher, card, broker, clock = station
    watcher._presented(card.atr)

    def slow(name, document):
        clock.now += 1.5
        broker(name, document)

    watcher.send = slow
    clock.now += monitor.PRESENTED_RETRY_S
    watcher.retry_owed()  # ends at +3.5
    clock.now += monitor.PRESENTED_RETRY_S - 0.1
    assert watcher.retry_owed() is False and len(broker.tried) == 2
    clock.now += 0.1
    watcher.retry_owed()
    assert len(broker.tried) == 3


def test_status_line_says_a_report_is_waiting(station):
    watcher, card, broker, clock = station
    agent = worker.Agent(identity=watcher.identity, home=None, reader=READER, app=None, ledger=None)
    watcher._presented(card.atr)
    assert f"card {flows.DESFIRE_UID} (report waiting for the broker) |" in worker.status_line(agent, watcher)
    broker.up = True
    clock.now += monitor.PRESENTED_RETRY_S
    watcher.retry_owed()
    assert f"card {flows.DESFIRE_UID} | jobs" in worker.status_line(agent, watcher)
