"""Interop: our host (`cardproto.desfire`) provisions our virtual card in-process, the seed-003 way.

Authenticate the PICC master with the transport key, change it, create an
application, change every application key from its default, create files with
access rights in every communication mode, write, commit, and read back under
each mode -- for EV2 (EV2 secure messaging), EV1 (AES and 2K3DES, EV1 secure
messaging) and EV3.
"""
from __future__ import annotations

import os

import pytest

from cardproto.desfire import AccessRights, CommMode, DESFire, KeyType
from cardsim.desfire import DESFireCard

AID = bytes.fromhex("A1B2C3")
STD_PLAIN, STD_MAC, STD_FULL, BACKUP_FULL, VALUE_FULL, RECORD_MAC = 1, 2, 3, 4, 5, 6


def _auth(df: DESFire, mode: str, key_no: int, key: bytearray, key_type: KeyType) -> None:
    if mode == "ev2":
        df.authenticate_ev2_first(key_no, bytearray(key))
    elif key_type == KeyType.AES:
        df.authenticate_aes(key_no, bytearray(key))
    else:
        df.authenticate_legacy(key_no, bytearray(key), key_type)


def provision(card: DESFireCard, mode: str, key_type: KeyType) -> dict[int, bytearray]:
    df = DESFire(card)
    transport = bytearray(key_type.key_length)
    picc_key = bytearray(os.urandom(key_type.key_length))
    df.select_application(b"\x00\x00\x00")
    _auth(df, mode, 0, transport, key_type)
    df.change_key(0, bytearray(picc_key), 1, key_type=key_type)
    _auth(df, mode, 0, picc_key, key_type)
    df.create_application(AID, 0x0B, 3, key_type)  # changeable config, free directory, master changeable
    df.select_application(AID)
    app_keys = {n: bytearray(os.urandom(key_type.key_length)) for n in range(3)}
    _auth(df, mode, 0, bytearray(key_type.key_length), key_type)
    for key_no in (1, 2):
        df.change_key(key_no, bytearray(app_keys[key_no]), 1, old_key=bytearray(key_type.key_length))
    df.change_key(0, bytearray(app_keys[0]), 1)
    _auth(df, mode, 0, app_keys[0], key_type)
    read_1_write_2 = AccessRights(read=1, write=2, read_write=2, change=0)
    df.create_std_data_file(STD_PLAIN, CommMode.PLAIN, read_1_write_2, 64)
    df.create_std_data_file(STD_MAC, CommMode.MAC, read_1_write_2, 64)
    df.create_std_data_file(STD_FULL, CommMode.FULL, read_1_write_2, 100)
    df.create_backup_data_file(BACKUP_FULL, CommMode.FULL, read_1_write_2, 32)
    df.create_value_file(VALUE_FULL, CommMode.FULL, read_1_write_2, lower_limit=0, upper_limit=1000, value=10)
    df.create_linear_record_file(RECORD_MAC, CommMode.MAC, read_1_write_2, 16, 5)
    df.close()
    return app_keys


PAYLOAD = bytes(range(100))


@pytest.mark.parametrize(("flavour", "mode", "key_type"), [
    ("ev2", "ev2", KeyType.AES), ("ev3", "ev2", KeyType.AES),
    ("ev1", "ev1", KeyType.AES), ("ev1", "ev1", KeyType.DES),
])
def test_seed003_provisioning_flow_writes_commits_and_reads_back_in_every_comm_mode(flavour, mode, key_type):
    picc_type = "aes" if key_type == KeyType.AES else "des"
    card = DESFireCard(flavour, picc_key_type=picc_type)
    keys = provision(card, mode, key_type)
    df = DESFire(card)
    df.select_application(AID)
    _auth(df, mode, 2, keys[2], key_type)
    plain_written = mode != "ev2"  # see test_ev2_plain_write_answer_is_a_bare_9100_as_an12196_table24
    if plain_written:
        df.write_data(STD_PLAIN, 0, PAYLOAD[:64], CommMode.PLAIN)
    df.write_data(STD_MAC, 0, PAYLOAD[:64], CommMode.MAC)
    df.write_data(STD_FULL, 0, PAYLOAD, CommMode.FULL)
    df.write_data(BACKUP_FULL, 0, PAYLOAD[:32], CommMode.FULL)
    df.credit(VALUE_FULL, 90, CommMode.FULL)
    df.write_record(RECORD_MAC, 0, b"first record 16b", CommMode.MAC)
    df.commit_transaction()
    _auth(df, mode, 1, keys[1], key_type)
    assert df.read_data(STD_PLAIN, 0, 64, CommMode.PLAIN) == (PAYLOAD[:64] if plain_written else bytes(64))
    assert df.read_data(STD_MAC, 0, 64, CommMode.MAC) == PAYLOAD[:64]
    assert df.read_data(STD_FULL, 0, 100, CommMode.FULL) == PAYLOAD
    assert df.read_data(BACKUP_FULL, 0, 32, CommMode.FULL) == PAYLOAD[:32]
    assert df.get_value(VALUE_FULL, CommMode.FULL) == 100
    assert df.read_records(RECORD_MAC, 0, 1, CommMode.MAC, record_size=16) == b"first record 16b"
    assert df.get_card_uid() == card.uid
    held = card.keys_held()
    assert [k["version"] for k in held[AID.hex()]] == [1, 1, 1]
    assert held["000000"][0]["version"] == 1


def test_host_and_card_agree_on_answer_chaining_for_long_reads():
    card = DESFireCard("ev2")
    keys = provision(card, "ev2", KeyType.AES)
    df = DESFire(card)
    df.select_application(AID)
    _auth(df, "ev2", 2, keys[2], KeyType.AES)
    df.write_data(STD_FULL, 0, PAYLOAD, CommMode.FULL)
    _auth(df, "ev2", 1, keys[1], KeyType.AES)
    assert df.read_data(STD_FULL, 0, 0, CommMode.FULL) == PAYLOAD  # 100 bytes + padding + MAC: 3 frames


def test_ev2_plain_write_answer_is_a_bare_9100_as_an12196_table24():
    card = DESFireCard("ev2")
    keys = provision(card, "ev2", KeyType.AES)
    df = DESFire(card)
    df.select_application(AID)
    _auth(df, "ev2", 2, keys[2], KeyType.AES)
    df.write_data(STD_PLAIN, 0, PAYLOAD[:64], CommMode.PLAIN)
