"""Fixtures: pcscd with the vpcd driver (one per machine, shared), and virtual cards in its readers.

`pcscd` is cardsim.pcscd.shared_pcscd: it reuses a running pcscd that offers
"Virtual PCD" readers, or starts its own `pcscd --foreground` (eight vpcd
readers) and stops it by pid when the last process using it (xdist workers,
other sessions on the machine, bench/ scripts, a `bin/start` demo) is done:
users are counted in a JSON file under an flock in the temp directory. Tests marked
`pcsc` are put in the xdist group "pcsc", so under `--dist loadgroup` they
run in one worker; each card still takes its vpcd slot under the bridge's own
slot lock, so concurrent sessions wait for each other instead of colliding.
Missing pcscd or vpcd is a failure that says to run bin/setup, never a skip.
"""
from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from cardproto.transport import PyscardTransport
from cardsim.base import VirtualCard
from cardsim.pcscd import (  # noqa: F401 - re-exported for tests and bench/ scripts
    READER_PREFIX,
    SETUP_HINT,
    Pcscd,
    PcscUnavailable,
    shared_pcscd,
    virtual_readers,
)
from cardsim.vpcd import SlotBusy, VpcdBridge, port_in_use


@pytest.hookimpl(tryfirst=True)  # before xdist reads the group marks
def pytest_collection_modifyitems(config, items):
    """Every test that uses pcscd is a pcsc test and joins the xdist group "pcsc" (under loadgroup one
    worker runs them all, so one run never holds more readers than its tests need at once)."""
    for item in items:
        if "pcscd" in getattr(item, "fixturenames", ()) and not item.get_closest_marker("pcsc"):
            item.add_marker(pytest.mark.pcsc)
        if item.get_closest_marker("pcsc") and not item.get_closest_marker("xdist_group"):
            item.add_marker(pytest.mark.xdist_group("pcsc"))


@pytest.fixture(scope="session")
def pcscd() -> Iterator[Pcscd]:
    context = shared_pcscd()
    try:
        daemon = context.__enter__()
    except PcscUnavailable as exc:
        pytest.fail(str(exc))
    try:
        yield daemon
    finally:
        context.__exit__(None, None, None)


@dataclass
class VirtualReader:
    """A virtual card in a pcscd reader, as a host sees it: reader name, pyscard connection, transport."""

    card: VirtualCard
    bridge: VpcdBridge
    reader: str
    connection: object | None = None
    transport: PyscardTransport | None = None
    others: list = field(default_factory=list)  # more connections to this reader, closed with it

    def connect(self, timeout: float = 10.0) -> PyscardTransport:
        """(Re)open a pyscard connection, e.g. after the card was removed and put back."""
        from smartcard.Exceptions import CardConnectionException, NoCardException
        from smartcard.System import readers

        self.disconnect()
        deadline = time.monotonic() + timeout
        while True:
            reader = next((r for r in readers() if str(r) == self.reader), None)
            try:
                if reader is None:
                    raise NoCardException(f"reader {self.reader!r} is gone")
                connection = reader.createConnection()
                connection.connect()
                break
            except (NoCardException, CardConnectionException) as exc:
                # pcscd may report the card a poll (~0.45 s) after vpcd handed it over.
                if time.monotonic() > deadline:
                    pytest.fail(f"no card in {self.reader!r} after {timeout:.0f} s: {exc}")
                time.sleep(0.1)
        self.connection = connection
        self.transport = PyscardTransport(connection)
        return self.transport

    def disconnect(self) -> None:
        if self.connection is not None:
            with contextlib.suppress(Exception):
                self.connection.disconnect()
            self.connection = None
            self.transport = None

    def remove(self) -> None:
        self.disconnect()
        self.bridge.remove()

    def insert(self) -> PyscardTransport:
        self.bridge.insert()
        return self.connect()

    def close(self) -> None:
        for other in self.others:
            with contextlib.suppress(Exception):
                other.close()
        self.disconnect()
        self.bridge.stop()


def start_bridge(card: VirtualCard, pcscd: Pcscd, timeout: float = 120.0) -> VpcdBridge:
    """Put `card` into the first free vpcd slot, waiting while other tests hold them all."""
    deadline = time.monotonic() + timeout
    while True:
        for port in pcscd.ports:
            bridge = VpcdBridge(card, port)
            try:
                return bridge.start()
            except SlotBusy:
                continue
        if time.monotonic() > deadline:
            pytest.fail(f"every vpcd slot {pcscd.ports} stayed busy for {timeout:.0f} s")
        time.sleep(0.25)


def free_port(pcscd: Pcscd, timeout: float = 120.0) -> int:
    """A vpcd port no bridge holds right now (for a `python -m cardsim` subprocess), waiting for one."""
    deadline = time.monotonic() + timeout
    while True:
        for port in pcscd.ports:
            if not port_in_use(port):
                return port
        if time.monotonic() > deadline:
            pytest.fail(f"every vpcd slot {pcscd.ports} stayed busy for {timeout:.0f} s")
        time.sleep(0.25)


@pytest.fixture
def pcsc_card(pcscd: Pcscd) -> Iterator[Callable[..., VirtualReader]]:
    """Factory: `pcsc_card(card)` inserts a virtual card into a free vpcd reader and connects to it
    through pyscard; yields a VirtualReader (reader name, transport, bridge). Removed at test end."""
    inserted: list[VirtualReader] = []

    def insert(card: VirtualCard, *, connect: bool = True) -> VirtualReader:
        bridge = start_bridge(card, pcscd)
        virtual = VirtualReader(card=card, bridge=bridge, reader=pcscd.reader_name(bridge.port))
        inserted.append(virtual)
        if connect:
            virtual.connect()
        return virtual

    yield insert
    for virtual in inserted:
        virtual.close()


def cardsim_command(*args: str) -> list[str]:
    """The command line of the bridge CLI, run with this interpreter."""
    return [sys.executable, "-m", "cardsim", *args]
