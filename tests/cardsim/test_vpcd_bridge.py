"""The vpcd bridge and the card registry without pcscd: the test plays vpcd's side of the socket.

The frames are vsmartcard's vpcd protocol (2-byte big-endian length; 1-byte
control payloads 00 off, 01 on, 02 reset, 04 ATR), as its virtual card
`vpicc` speaks it; the same bridge through the real pcscd is tested in
tests/interop/test_pcsc_*.py.
"""
from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys

import pytest

from cardsim import registry
from cardsim.desfire import DESFireCard
from cardsim.vpcd import SlotBusy, VpcdBridge, port_in_use

GET_VERSION = bytes.fromhex("9060000000")


class FakeVpcd:
    """vpcd's listening side: accepts the card, sends control codes and APDUs, reads answers."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(10)
        self.port = self.server.getsockname()[1]
        self.conn: socket.socket | None = None

    def accept(self) -> None:
        self.conn, _ = self.server.accept()
        self.conn.settimeout(10)

    def send(self, payload: bytes) -> None:
        self.conn.sendall(struct.pack(">H", len(payload)) + payload)

    def receive(self) -> bytes:
        header = self._exact(2)
        return self._exact(struct.unpack(">H", header)[0])

    def _exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.conn.recv(n - len(data))
            if not chunk:
                raise ConnectionError("card closed the connection")
            data += chunk
        return data

    def power_up(self) -> bytes:
        """What pcscd does on insertion: presence poll (ATR), power on, ATR again."""
        self.send(b"\x04")
        atr = self.receive()
        self.send(b"\x01")
        self.send(b"\x04")
        assert self.receive() == atr
        return atr

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.server.close()


@pytest.fixture
def vpcd(tmp_path, monkeypatch):
    monkeypatch.setattr("cardsim.vpcd.LOCK_DIR", tmp_path)  # slot locks of throwaway ports stay out of /tmp
    fake = FakeVpcd()
    yield fake
    fake.close()


def test_bridge_answers_atr_and_apdus_and_counts_pcscd_as_having_seen_the_card(vpcd):
    card = DESFireCard("ev2")
    bridge = VpcdBridge(card, vpcd.port).start(wait=False)
    try:
        vpcd.accept()
        assert vpcd.power_up() == card.atr
        bridge.wait_seen(timeout=5)
        vpcd.send(GET_VERSION)
        answer = vpcd.receive()
        assert answer[-2:] == b"\x91\xaf" and answer[3] == 0x12  # EV2 hardware version, more frames
        assert bridge.apdus == 1 and bridge.inserted
    finally:
        bridge.stop()
    assert not port_in_use(vpcd.port)


def test_state_is_saved_after_every_command_and_reloaded_by_the_registry(vpcd, tmp_path):
    path = tmp_path / "card.json"
    card = registry.open_card("desfire-ev1", path)
    bridge = VpcdBridge(card, vpcd.port).start(wait=False)
    try:
        vpcd.accept()
        vpcd.power_up()
        vpcd.send(bytes.fromhex("90CA000005" "A1A2A3" "0F" "02" "00"))  # CreateApplication, no auth needed
        assert vpcd.receive() == b"\x91\x00"
        saved = json.loads(path.read_text())  # written before the answer left
        assert saved["kind"] == "desfire-ev1" and [a["aid"] for a in saved["apps"]] == ["a1a2a3"]
    finally:
        bridge.stop()
    again = registry.open_card("desfire-ev1", path)
    assert again.uid == card.uid and list(again.apps) == [bytes.fromhex("A1A2A3")]


def test_fault_removal_closes_the_socket_without_an_answer_and_insert_comes_back(vpcd):
    card = DESFireCard("ev2")
    bridge = VpcdBridge(card, vpcd.port, min_absence_s=0.1).start(wait=False)
    try:
        vpcd.accept()
        vpcd.power_up()
        card.faults.remove_after = card.apdu_count
        vpcd.send(GET_VERSION)
        with pytest.raises(ConnectionError):
            vpcd.receive()
        bridge.wait_removed(5)
        assert bridge.removals == 1 and not bridge.wants_insertion
        bridge.insert(wait=False)
        vpcd.accept()
        vpcd.power_up()
        bridge.wait_seen(5)
        vpcd.send(GET_VERSION)  # the spent fault does not remove the card again
        assert vpcd.receive()[-2:] == b"\x91\xaf"
    finally:
        bridge.stop()


def test_a_fault_planned_before_insertion_still_fires(vpcd):
    card = DESFireCard("ev2")
    card.faults.remove_after = 1  # as `python -m cardsim --remove-after 1` sets it
    bridge = VpcdBridge(card, vpcd.port).start(wait=False)
    try:
        vpcd.accept()
        vpcd.power_up()
        vpcd.send(GET_VERSION)
        assert vpcd.receive()[-2:] == b"\x91\xaf"
        vpcd.send(bytes.fromhex("90AF000000"))
        with pytest.raises(ConnectionError):
            vpcd.receive()
        bridge.wait_removed(5)
    finally:
        bridge.stop()


def test_bridge_reconnects_when_vpcd_drops_the_connection(vpcd):
    bridge = VpcdBridge(DESFireCard("ev2"), vpcd.port, min_absence_s=0.1).start(wait=False)
    try:
        vpcd.accept()
        vpcd.power_up()
        vpcd.conn.close()  # pcscd restarting
        vpcd.accept()
        vpcd.power_up()
        vpcd.send(GET_VERSION)
        assert vpcd.receive()[-2:] == b"\x91\xaf"
    finally:
        bridge.stop()


def test_one_card_per_slot_across_bridges(vpcd):
    first = VpcdBridge(DESFireCard("ev2"), vpcd.port).start(wait=False)
    try:
        assert port_in_use(vpcd.port)
        with pytest.raises(SlotBusy, match=str(vpcd.port)):
            VpcdBridge(DESFireCard("ev2"), vpcd.port).start(wait=False)
    finally:
        first.stop()
    VpcdBridge(DESFireCard("ev2"), vpcd.port).start(wait=False).stop()


def test_registry_names_resolve_lazily_with_clear_errors(tmp_path):
    assert sorted(registry.CARD_TYPES) == ["desfire-ev1", "desfire-ev2", "desfire-ev3", "jcop4"]
    assert registry.new_card("desfire-ev3").flavour == "ev3"
    assert registry.new_card("jcop4").kind == "jcop4"
    with pytest.raises(registry.UnknownCardType, match="known: desfire-ev1"):
        registry.card_type("desfire-ev9")
    with pytest.raises(registry.CardTypeUnavailable, match="cardsim.nowhere:Card"):
        registry.CardType("future", "cardsim.nowhere:Card").card_class()
    path = tmp_path / "card.json"
    registry.open_card("desfire-ev2", path)
    with pytest.raises(registry.StateMismatch, match="desfire-ev2"):
        registry.open_card("jcop4", path)


def test_cli_refuses_a_state_file_of_another_card_type(tmp_path):
    path = tmp_path / "card.json"
    registry.open_card("desfire-ev1", path)
    done = subprocess.run([sys.executable, "-m", "cardsim", "--card", "desfire-ev2", "--state", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "holds a 'desfire-ev1' card, not 'desfire-ev2'" in done.stderr


class _BrokenCard(DESFireCard):
    def process(self, apdu: bytes) -> bytes:
        if apdu[1] == 0x60:
            raise RuntimeError("simulated card bug")
        return super().process(apdu)


def test_a_card_bug_answers_6f00_instead_of_leaving_vpcd_waiting(vpcd):
    bridge = VpcdBridge(_BrokenCard("ev2"), vpcd.port).start(wait=False)
    try:
        vpcd.accept()
        vpcd.power_up()
        vpcd.send(GET_VERSION)
        assert vpcd.receive() == b"\x6f\x00"
        vpcd.send(bytes.fromhex("906A000000"))  # GetApplicationIDs still works
        assert vpcd.receive() == b"\x91\x00"
    finally:
        bridge.stop()
