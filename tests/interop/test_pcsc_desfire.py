"""Interop through real pcscd + vpcd: our DESFire host (`cardproto.desfire`) and the virtual DESFire
(`cardsim.desfire`) speak only through pyscard, as they would with a reader and a real card.

Covers EV1 AES and EV2 authentication, application and file creation, full-mode
(encrypted + MACed) WriteData/ReadData, a card pulled out mid-command (the host
gets CardRemovedError, never a retry), two cards in two readers at once, and the
`python -m cardsim` state file surviving a killed bridge process.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time

import pytest

from cardproto.desfire import AccessRights, CommMode, DESFire, KeyType
from cardproto.errors import CardRemovedError
from cardsim.desfire import DESFireCard
from tests.support.pcsc import VirtualReader, cardsim_command, free_port

pytestmark = [pytest.mark.pcsc, pytest.mark.xdist_group("pcsc")]

AID = bytes.fromhex("C0FFEE")
FILE_FULL = 1
RIGHTS = AccessRights(read=1, write=1, read_write=1, change=0)
PAYLOAD = bytes(range(100))  # 100 bytes + padding + MAC: the answer spans several 0xAF frames


def _authenticate(df: DESFire, mode: str, key_no: int, key: bytearray) -> None:
    if mode == "ev2":
        df.authenticate_ev2_first(key_no, key)
    else:
        df.authenticate_aes(key_no, key)


def _provision(df: DESFire, mode: str, app_key: bytearray) -> None:
    """PICC transport key -> new application with a full-mode file, application key 1 changed."""
    df.select_application(b"\x00\x00\x00")
    _authenticate(df, mode, 0, bytearray(16))
    df.create_application(AID, 0x0B, 2, KeyType.AES)
    df.select_application(AID)
    _authenticate(df, mode, 0, bytearray(16))
    df.change_key(1, bytearray(app_key), 1, old_key=bytearray(16))
    df.create_std_data_file(FILE_FULL, CommMode.FULL, RIGHTS, len(PAYLOAD))


@pytest.mark.parametrize(("flavour", "mode"), [("ev2", "ev2"), ("ev3", "ev2"), ("ev1", "ev1")])
def test_host_provisions_and_exchanges_full_mode_data_with_virtual_desfire_through_pcscd(
        pcsc_card, flavour, mode):
    card = DESFireCard(flavour, picc_key_type="aes")
    virtual: VirtualReader = pcsc_card(card)
    df = DESFire(virtual.transport)
    assert df.get_version().uid == card.uid
    app_key = bytearray(os.urandom(16))
    _provision(df, mode, app_key)
    df.select_application(AID)
    _authenticate(df, mode, 1, bytearray(app_key))
    df.write_data(FILE_FULL, 0, PAYLOAD, CommMode.FULL)
    assert df.read_data(FILE_FULL, 0, 0, CommMode.FULL) == PAYLOAD
    # The card itself holds what the host wrote, and the key version the host set.
    assert bytes(card.apps[AID].files[FILE_FULL].data) == PAYLOAD
    assert [k["version"] for k in card.keys_held()[AID.hex()]] == [0, 1]
    assert virtual.bridge.apdus == card.apdu_count


def test_card_pulled_before_a_command_raises_card_removed_and_the_command_never_ran(pcsc_card):
    card = DESFireCard("ev2")
    virtual = pcsc_card(card)
    df = DESFire(virtual.transport)
    app_key = bytearray(16)
    _provision(df, "ev2", app_key)
    df.select_application(AID)
    df.authenticate_ev2_first(1, bytearray(app_key))
    card.faults.remove_after = card.apdu_count  # the next APDU finds no card in the field
    with pytest.raises(CardRemovedError):
        df.write_data(FILE_FULL, 0, PAYLOAD, CommMode.FULL)
    assert virtual.bridge.removals == 1 and not virtual.bridge.inserted
    assert bytes(card.apps[AID].files[FILE_FULL].data) == bytes(len(PAYLOAD))

    # Put it back: the host starts a fresh session; nothing was retried behind its back.
    auths_before = card.ins_counts.get(0x71, 0)
    df = DESFire(virtual.insert())
    df.select_application(AID)
    df.authenticate_ev2_first(1, bytearray(app_key))
    assert card.ins_counts[0x71] == auths_before + 1
    df.write_data(FILE_FULL, 0, PAYLOAD, CommMode.FULL)
    assert df.read_data(FILE_FULL, 0, 0, CommMode.FULL) == PAYLOAD


def test_card_pulled_after_executing_keeps_the_write_the_host_never_heard_of(pcsc_card):
    card = DESFireCard("ev2")
    virtual = pcsc_card(card)
    df = DESFire(virtual.transport)
    app_key = bytearray(16)
    _provision(df, "ev2", app_key)
    df.select_application(AID)
    df.authenticate_ev2_first(1, bytearray(app_key))
    short = PAYLOAD[:16]  # one frame: the command runs in the very APDU whose answer is lost
    card.faults.remove_after_executing = card.apdu_count
    with pytest.raises(CardRemovedError):
        df.write_data(FILE_FULL, 0, short, CommMode.FULL)
    assert bytes(card.apps[AID].files[FILE_FULL].data[:16]) == short

    df = DESFire(virtual.insert())
    df.select_application(AID)
    df.authenticate_ev2_first(1, bytearray(app_key))
    assert df.read_data(FILE_FULL, 0, 16, CommMode.FULL) == short


def test_two_cards_answer_at_once_in_two_readers(pcsc_card, pcscd):
    if len(pcscd.ports) < 2:
        pytest.fail(f"vpcd offers {len(pcscd.ports)} reader(s); this test needs two (run bin/setup)")
    first, second = DESFireCard("ev2"), DESFireCard("ev1")
    a, b = pcsc_card(first), pcsc_card(second)
    assert a.reader != b.reader
    for _ in range(3):  # interleaved: each reader keeps its own card
        assert DESFire(a.transport).get_version().uid == first.uid
        assert DESFire(b.transport).get_version().uid == second.uid
    assert DESFire(a.transport).get_version().hardware[3] == 0x12  # EV2
    assert DESFire(b.transport).get_version().hardware[3] == 0x01  # EV1


def _cli_card(pcscd, state, timeout: float = 60.0) -> tuple[subprocess.Popen, str]:
    """`python -m cardsim` on a free slot; another session may take a slot first, then try the next."""
    deadline = time.monotonic() + timeout
    while True:
        port = free_port(pcscd)
        process = subprocess.Popen(
            cardsim_command("--card", "desfire-ev2", "--state", str(state), "--port", str(pcscd.base_port),
                            "--reader-slot", str(port - pcscd.base_port)),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        line = process.stdout.readline()
        if "inserted at" in line:
            seen = process.stdout.readline()  # the bridge tells when pcscd has taken the card
            assert "pcscd has seen the card" in seen, seen
            return process, pcscd.reader_name(port)
        output = line + process.stdout.read()
        if process.wait(10) != 3 or time.monotonic() > deadline:  # 3: slot busy
            pytest.fail(f"python -m cardsim did not start: {output}")
        time.sleep(0.5)


def _connect(reader: str, timeout: float = 15.0):
    """A pyscard connection to `reader` and our DESFire host on it."""
    from smartcard.Exceptions import CardConnectionException, NoCardException
    from smartcard.System import readers

    from cardproto.transport import PyscardTransport

    deadline = time.monotonic() + timeout
    while True:
        try:
            connection = next(r for r in readers() if str(r) == reader).createConnection()
            connection.connect()
            return connection, DESFire(PyscardTransport(connection))
        except (NoCardException, CardConnectionException):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _release(connection) -> None:
    """Let go of a handle, as a host does after its card left: releasing it later would power down
    (SCARD_UNPOWER_CARD, pyscard's default) whatever card is in that reader by then."""
    with contextlib.suppress(Exception):
        connection.disconnect()


def test_state_file_survives_a_killed_bridge_process(pcscd, tmp_path):
    state = tmp_path / "card.json"
    app_key = bytearray(os.urandom(16))
    process, reader = _cli_card(pcscd, state)
    try:
        connection, df = _connect(reader)
        uid = df.get_version().uid
        _provision(df, "ev2", app_key)
        df.select_application(AID)
        df.authenticate_ev2_first(1, bytearray(app_key))
        df.write_data(FILE_FULL, 0, PAYLOAD, CommMode.FULL)
        df.close()
    finally:
        process.send_signal(signal.SIGKILL)  # no chance to save on the way out
        process.wait(10)
    _release(connection)
    saved = json.loads(state.read_text())
    assert saved["kind"] == "desfire-ev2" and saved["uid"] == uid.hex()
    assert [app["aid"] for app in saved["apps"]] == [AID.hex()]

    process, reader = _cli_card(pcscd, state)  # maybe another reader: the card is its state file
    try:
        connection, df = _connect(reader)
        assert df.get_version().uid == uid
        df.select_application(AID)
        df.authenticate_ev2_first(1, bytearray(app_key))
        assert df.read_data(FILE_FULL, 0, 0, CommMode.FULL) == PAYLOAD
        _release(connection)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
