"""Behaviour of the virtual DESFire card: access rights, comm modes, limits, transactions, faults, state."""
from __future__ import annotations

import json

import pytest

from cardproto.desfire import AccessRights, CommMode, DESFire, KeyType
from cardproto.errors import CardError, StatusWordError
from cardsim.base import CardRemoved
from cardsim.desfire import DESFireCard

AID = bytes.fromhex("010203")
ZERO = bytearray(16)


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def app_card(**files) -> tuple[DESFireCard, DESFire]:
    """EV2 card, one AES app with 3 zero keys; file 1 full (read key 1, write key 2)."""
    card = DESFireCard("ev2")
    df = DESFire(card)
    df.create_application(AID, 0x0F, 3, KeyType.AES)
    df.select_application(AID)
    df.authenticate_ev2_first(0, bytearray(ZERO))
    rights = AccessRights(read=1, write=2, read_write=2, change=0)
    df.create_std_data_file(1, CommMode.FULL, rights, 32)
    df.create_backup_data_file(2, CommMode.FULL, rights, 16)
    df.create_value_file(3, CommMode.MAC, rights, lower_limit=0, upper_limit=100, value=50,
                         limited_credit=True)
    df.create_linear_record_file(4, CommMode.PLAIN, AccessRights(read=0xE, write=0xE, read_write=0xE,
                                                                   change=0), 4, 2)
    return card, df


def sw_of(excinfo) -> int:
    return excinfo.value.sw


def test_reading_a_file_without_the_right_key_is_refused_with_91ae():
    card, df = app_card()
    df.select_application(AID)  # selecting ends the authentication
    assert card.transmit(h("90BD000007 01 000000 040000 00")) == h("91AE")
    df.authenticate_ev2_first(2, bytearray(ZERO))  # the write key is not the read key... but RW=2 grants read
    assert df.read_data(1, 0, 4, CommMode.FULL) == bytes(4)
    df.authenticate_ev2_first(0, bytearray(ZERO))
    with pytest.raises(StatusWordError) as wrong_key:
        df.read_data(1, 0, 4, CommMode.FULL)
    assert sw_of(wrong_key) == 0x91AE


def test_full_mode_file_cannot_be_written_in_plain():
    card, df = app_card()
    df.authenticate_ev2_first(2, bytearray(ZERO))
    # 16 plain bytes padded to the size of a cryptogram plus MAC (32 + 8), so the card judges them
    # instead of asking for more frames.
    answer = card.transmit(h("903D00002F 01 000000 100000") + b"plain text data!" + bytes(24) + b"\x00")
    assert answer == h("911E")
    assert bytes(card.apps[AID].files[1].data) == bytes(32)
    # And a plain write of exactly the data length only makes the card wait for the rest (91 AF).
    df.authenticate_ev2_first(2, bytearray(ZERO))
    assert card.transmit(h("903D00000B 01 000000 040000 41424344 00")) == h("91AF")
    assert bytes(card.apps[AID].files[1].data) == bytes(32)


def test_value_file_enforces_its_limits_and_limited_credit():
    card, df = app_card()
    df.authenticate_ev2_first(2, bytearray(ZERO))
    with pytest.raises(StatusWordError) as over:
        df.credit(3, 51, CommMode.MAC)
    assert sw_of(over) == 0x91BE
    df.authenticate_ev2_first(2, bytearray(ZERO))
    df.debit(3, 20, CommMode.MAC)
    df.commit_transaction()
    assert df.get_value(3, CommMode.MAC) == 30
    with pytest.raises(StatusWordError) as too_much:
        df.limited_credit(3, 21, CommMode.MAC)
    assert sw_of(too_much) == 0x91BE
    df.authenticate_ev2_first(2, bytearray(ZERO))
    df.limited_credit(3, 20, CommMode.MAC)
    df.commit_transaction()
    assert df.get_value(3, CommMode.MAC) == 50


def test_backup_value_and_record_changes_wait_for_commit_and_abort_discards_them():
    card, df = app_card()
    df.authenticate_ev2_first(2, bytearray(ZERO))
    df.write_data(2, 0, b"new backup data!", CommMode.FULL)
    df.debit(3, 5, CommMode.MAC)
    assert bytes(card.apps[AID].files[2].data) == bytes(16) and card.apps[AID].files[3].value == 50
    df.abort_transaction()
    df.commit_transaction()
    assert bytes(card.apps[AID].files[2].data) == bytes(16) and card.apps[AID].files[3].value == 50
    df.write_data(2, 0, b"new backup data!", CommMode.FULL)
    df.authenticate_ev2_first(2, bytearray(ZERO))  # re-authentication discards the open transaction
    df.commit_transaction()
    assert bytes(card.apps[AID].files[2].data) == bytes(16)
    df.write_data(2, 0, b"new backup data!", CommMode.FULL)
    df.commit_transaction()
    assert bytes(card.apps[AID].files[2].data) == b"new backup data!"
    df.select_application(AID)  # the record file is free for everyone: no session needed
    df.write_record(4, 0, b"rec1")
    assert card.apps[AID].files[4].records == []
    df.abort_transaction()
    df.write_record(4, 0, b"rec2")
    df.commit_transaction()
    assert df.read_records(4, 0, 0) == b"rec2"


def test_linear_record_file_refuses_records_beyond_its_size():
    card, df = app_card()
    df.select_application(AID)
    for record in (b"rec1", b"rec2"):
        df.write_record(4, 0, record)
        df.commit_transaction()
    with pytest.raises(StatusWordError) as full:
        df.write_record(4, 0, b"rec3")
    assert sw_of(full) == 0x91BE
    assert df.read_records(4, 0, 0) == b"rec1rec2"


def test_twenty_ninth_application_is_refused_with_91ce():
    card = DESFireCard("ev2", memory_size=32768)
    df = DESFire(card)
    for n in range(28):
        df.create_application(bytes((n + 1, 0, 0)), 0x0F, 1, KeyType.AES)
    with pytest.raises(StatusWordError) as excinfo:
        df.create_application(b"\x77\x00\x00", 0x0F, 1, KeyType.AES)
    assert sw_of(excinfo) == 0x91CE


def test_full_card_answers_0e_and_free_memory_counts_down():
    card = DESFireCard("ev2", memory_size=2048)
    df = DESFire(card)
    before = df.free_memory()
    df.create_application(AID, 0x0F, 1, KeyType.AES)
    df.select_application(AID)
    df.create_std_data_file(1, CommMode.PLAIN, AccessRights(), 1000)
    assert df.free_memory() < before - 1000
    with pytest.raises(StatusWordError) as excinfo:
        df.create_std_data_file(2, CommMode.PLAIN, AccessRights(), 1000)
    assert sw_of(excinfo) == 0x910E


def test_tear_during_backup_write_leaves_the_old_data():
    card, df = app_card()
    df.authenticate_ev2_first(2, bytearray(ZERO))
    df.write_data(2, 0, b"old data 16bytes", CommMode.FULL)
    df.commit_transaction()
    df.authenticate_ev2_first(2, bytearray(ZERO))
    card.faults.tear_next_write = True
    with pytest.raises(CardRemoved):
        df.write_data(2, 0, b"NEW DATA 16BYTES", CommMode.FULL)
    card.power_on()
    df = DESFire(card)
    df.select_application(AID)
    df.authenticate_ev2_first(2, bytearray(ZERO))
    df.commit_transaction()
    assert df.read_data(2, 0, 16, CommMode.FULL) == b"old data 16bytes"


def test_tear_during_commit_keeps_all_of_the_old_transaction_state():
    card, df = app_card()
    df.authenticate_ev2_first(2, bytearray(ZERO))
    df.write_data(2, 0, b"NEW DATA 16BYTES", CommMode.FULL)
    df.debit(3, 10, CommMode.MAC)
    card.faults.tear_next_write = True
    with pytest.raises(CardRemoved):
        df.commit_transaction()
    card.power_on()
    assert bytes(card.apps[AID].files[2].data) == bytes(16) and card.apps[AID].files[3].value == 50


def test_corrupted_answer_mac_is_rejected_by_the_host():
    card, df = app_card()
    df.authenticate_ev2_first(1, bytearray(ZERO))
    card.faults.corrupt_next_mac = True
    with pytest.raises(CardError):
        df.read_data(1, 0, 4, CommMode.FULL)


def test_reader_uid_pseudo_apdu_and_state_file_round_trip(tmp_path):
    card, df = app_card()
    assert card.transmit(h("FFCA000000")) == card.uid + h("9000")
    path = tmp_path / "card.json"
    card.attach_state_file(path)
    card.transmit(h("906E000000"))
    state = json.loads(path.read_text())
    assert state["kind"] == "desfire-ev2" and state["apps"][0]["aid"] == AID.hex()
    again = DESFireCard("ev2")
    again.attach_state_file(path)
    assert again.uid == card.uid and again.keys_held() == card.keys_held()
    assert "value" not in repr(again.apps[AID].keys[0]) or "<hidden>" in repr(again.apps[AID].keys[0])


def test_ev1_card_refuses_ev2_authentication_and_ev2_card_has_its_own_version():
    ev1, ev2 = DESFireCard("ev1"), DESFireCard("ev2")
    assert ev1.transmit(h("9071000002000000")) == h("911C")
    assert ev2.transmit(h("9060000000"))[3] == 0x12
    assert DESFireCard("ev3").transmit(h("9060000000"))[3] == 0x33


def test_picc_master_key_and_change_key_rights_are_enforced():
    card = DESFireCard("ev2")
    df = DESFire(card)
    df.create_application(AID, 0xEF, 3, KeyType.AES)  # 0xE: each key changes only itself
    df.select_application(AID)
    df.authenticate_ev2_first(0, bytearray(ZERO))
    with pytest.raises(StatusWordError) as excinfo:
        df.change_key(1, bytearray(16), 1, old_key=bytearray(16))
    assert sw_of(excinfo) == 0x91AE
    df.authenticate_ev2_first(1, bytearray(ZERO))
    df.change_key(1, bytearray(b"k" * 16), 7)
    assert card.keys_held()[AID.hex()][1]["version"] == 7
