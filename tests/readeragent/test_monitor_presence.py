"""A presented card whose first UID read fails (pcscd still powering it up) is read again and reported;
the monitor's and the job's connections no longer power the card down when they close (pyscard's default
disposition SCARD_UNPOWER_CARD did). Found by tests/e2e/test_removal.py under load: "card ... did not
answer GET DATA FF CA: not reported", and the card sat in the reader with no job until the test gave up."""
from __future__ import annotations

import threading

import pytest
from smartcard.Exceptions import CardConnectionException

from cardsim.desfire import DESFireCard
from readeragent import monitor, worker

NOT_TRANSACTED = 0x80100016  # SCARD_E_NOT_TRANSACTED, what pyscard raised in the e2e failure


class FlakyConnection:
    """pyscard's connection API over a virtual card; the first `fail` transmits raise like pcscd did."""

    def __init__(self, card, failures: list[int]) -> None:
        self.card, self.failures, self.closed = card, failures, False

    def transmit(self, apdu: list[int]):
        if self.failures[0]:
            self.failures[0] -= 1
            raise CardConnectionException("Transaction failed.", hresult=NOT_TRANSACTED)
        answer = self.card.transmit(bytes(apdu))
        return list(answer[:-2]), answer[-2], answer[-1]

    def disconnect(self) -> None:
        self.closed = True


@pytest.fixture
def flaky_reader(monkeypatch):
    card = DESFireCard("ev2", picc_key_type="des")
    failures = [1]
    connections: list[FlakyConnection] = []

    def connect(reader, **kw):
        connections.append(FlakyConnection(card, failures))
        return connections[-1]

    monkeypatch.setattr(monitor, "connect", connect)
    monkeypatch.setattr(monitor, "reader_has_card", lambda reader: True)
    monkeypatch.setattr(monitor, "PRESENT_READ_PAUSE_S", 0.0)
    return card, failures, connections


def test_presentation_is_reported_after_a_failed_uid_read(flaky_reader):
    card, failures, connections = flaky_reader
    reports = []
    watcher = monitor.CardMonitor(None, "Virtual PCD 00 00", None, card_lock=threading.Lock())
    watcher._report = lambda kind, **fields: reports.append((kind, fields))
    watcher._presented(card.atr)
    assert [(kind, fields["uid"], fields["chip_type"]) for kind, fields in reports] == [
        ("card_presented", card.uid.hex().upper(), "desfire_ev2")]
    assert len(connections) == 2 and all(c.closed for c in connections)


def test_no_presentation_reported_when_the_card_left(flaky_reader, monkeypatch):
    card, failures, connections = flaky_reader
    monkeypatch.setattr(monitor, "reader_has_card", lambda reader: False)
    reports = []
    watcher = monitor.CardMonitor(None, "Virtual PCD 00 00", None, card_lock=threading.Lock())
    watcher._report = lambda kind, **fields: reports.append((kind, fields))
    watcher._presented(card.atr)
    assert reports == [] and len(connections) == 1  # one read, the card is gone: nothing to report


def test_job_reads_the_uid_again_before_it_runs(flaky_reader):
    card, failures, connections = flaky_reader
    agent = worker.Agent(identity=None, home=None, reader="Virtual PCD 00 00", app=None, ledger=None)
    transport, uid, close = agent.open_card()
    assert uid == card.uid.hex().upper()  # not "" (a job refused as another card's)
    close()
    assert [c.closed for c in connections] == [True, True]


def test_connections_leave_or_reset_the_card_never_unpower(monkeypatch):
    """monitor.connect asks pcscd for SCARD_LEAVE_CARD (UID reads) or SCARD_RESET_CARD (a job)."""
    from smartcard import System
    from smartcard.scard import SCARD_LEAVE_CARD, SCARD_RESET_CARD

    seen = []

    class Connection:
        def connect(self, protocol=None, mode=None, disposition=None):
            seen.append(disposition)

    class Reader:
        def __str__(self) -> str:
            return "Virtual PCD 00 00"

        def createConnection(self):  # noqa: N802 - pyscard's name
            return Connection()

    monkeypatch.setattr(System, "readers", lambda: [Reader()])
    monitor.connect("Virtual PCD 00 00")
    monitor.connect("Virtual PCD 00 00", reset_on_close=True)
    assert seen == [SCARD_LEAVE_CARD, SCARD_RESET_CARD]
