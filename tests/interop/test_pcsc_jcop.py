"""Interop through real pcscd + vpcd: two independent SCP03 hosts -- ours (`cardproto.gp`) and
yubikit's (`yubikit.securitydomain` over `ykman.pcsc`) -- open a secure channel at security level
0x33 (C-MAC, C-DECRYPTION, R-MAC, R-ENCRYPTION) to the virtual JCOP 4 (`cardsim.jcop`), whose card
side shares no code with either, and exchange MACed and encrypted APDUs through pyscard.

PUT KEY is sent by our host only: yubikit's key-data layout (`88 10 <enc>`) is not GP Amendment D's
(`88 11 10 <enc>`) (NOTES-ENVIRONMENT); both hosts then reopen with the new keys.
"""
from __future__ import annotations

import os

import pytest
from yubikit.core import Tlv
from yubikit.core.smartcard import scp as yk
from yubikit.securitydomain import SecurityDomainSession

from cardproto.errors import CryptogramError
from cardproto.gp import commands as gp
from cardproto.gp import scp03
from cardproto.gp.data import parse_key_information
from cardproto.keys import StaticKeys
from cardsim.jcop import JCOP4Card
from tests.support.pcsc import VirtualReader

pytestmark = [pytest.mark.pcsc, pytest.mark.xdist_group("pcsc")]

GP_DEFAULT = bytes(range(0x40, 0x50))  # GP test key 40..4F, the JCOP factory default (seed 000)
LEVEL = 0x33
ISD_KEY_INFO = 0x00E0


def ours(virtual: VirtualReader, keys: StaticKeys, *, s16: bool = False) -> scp03.Scp03Channel:
    gp.select(virtual.transport, gp.ISD_AID)
    return scp03.open_channel(virtual.transport, keys, LEVEL, sd_aid=gp.ISD_AID, s16=s16)


def yubikit(virtual: VirtualReader, keys: yk.StaticKeys, kvn: int) -> SecurityDomainSession:
    """yubikit's host on its own pyscard connection (ykman.pcsc), as `ykman` would open a reader."""
    from smartcard.System import readers
    from ykman.pcsc import ScardSmartCardConnection

    virtual.disconnect()
    reader = next(r for r in readers() if str(r) == virtual.reader)
    connection = ScardSmartCardConnection(reader.createConnection())  # connects itself
    virtual.others.append(connection)
    session = SecurityDomainSession(connection)  # SELECTs the ISD
    session.authenticate(yk.Scp03KeyParams(yk.KeyRef(0x01, kvn), keys))
    return session


def store_data(session: SecurityDomainSession, data: bytes) -> None:
    """STORE DATA, last block, BER-TLV structure, wrapped by yubikit's SCP03 processor."""
    session.protocol.send_apdu(0x80, 0xE2, 0x90, 0x00, data)


@pytest.fixture
def jcop(pcsc_card):
    card = JCOP4Card(seed="pcsc-interop")
    return card, pcsc_card(card)


@pytest.mark.parametrize("s16", [False, True], ids=["S8", "S16"])
def test_our_scp03_host_exchanges_maced_and_encrypted_apdus_through_pcscd(jcop, s16):
    card, virtual = jcop
    channel = ours(virtual, StaticKeys.single(GP_DEFAULT, kvn=0x30), s16=s16)
    assert card.session.level == LEVEL and card.session.authenticated
    # C-DEC + C-MAC on a command with data: the card decrypts and stores what we sent.
    dgi_value = os.urandom(40)
    gp.store_data(channel, 0x0101, dgi_value)
    assert card.dgis[0x0101] == dgi_value
    # R-ENC + R-MAC on an answer with data: our host verifies and decrypts the key information.
    held = {(k.key_id, k.kvn) for k in gp.key_information(channel)}
    assert {(1, 0x30), (2, 0x30), (3, 0x30)} <= held
    assert card.ins_counts[0x82] == 1  # one EXTERNAL AUTHENTICATE, never retried


def test_yubikit_scp03_host_exchanges_maced_and_encrypted_apdus_through_pcscd(jcop):
    card, virtual = jcop
    session = yubikit(virtual, yk.StaticKeys.default(), 0x30)
    assert card.session.level == LEVEL and card.session.authenticated  # yubikit's fixed level
    # STORE DATA (BER-TLV, last block): yubikit encrypts and MACs, the card unwraps and stores.
    # Sent with GP's CLA 80 (yubikit's own store_data uses the YubiKey's CLA 00, which GP cards refuse).
    value = os.urandom(24)
    store_data(session, Tlv(0x42, value))
    assert card.tlvs[0x42] == value
    # GET DATA key information: the card encrypts and MACs the answer, yubikit verifies and decrypts.
    held = {(k.key_id, k.kvn) for k in parse_key_information(session.get_data(ISD_KEY_INFO))}
    assert {(1, 0x30), (2, 0x30), (3, 0x30)} <= held


def test_put_key_by_our_host_then_both_hosts_reopen_with_the_new_keys(jcop):
    card, virtual = jcop
    enc, mac, dek = (os.urandom(16) for _ in range(3))
    channel = ours(virtual, StaticKeys.single(GP_DEFAULT, kvn=0x30))
    answer = gp.put_key(channel, StaticKeys(enc, mac, dek, kvn=0x31), replace_kvn=0x30)  # KCVs checked
    assert answer[0] == 0x31 and sorted(card.key_sets) == [0x20, 0x31]

    channel = ours(virtual, StaticKeys(enc, mac, dek, kvn=0x31))
    gp.store_data(channel, 0x0102, b"reopened by cardproto")
    assert card.dgis[0x0102] == b"reopened by cardproto"

    session = yubikit(virtual, yk.StaticKeys(enc, mac, dek), 0x31)
    store_data(session, Tlv(0x43, b"reopened by yubikit"))
    assert card.tlvs[0x43] == b"reopened by yubikit"

    # The old keys are gone: our host sees a wrong card cryptogram and never sends EXTERNAL
    # AUTHENTICATE, so the card's failure counter does not move.
    virtual.connect()
    failures = card.failed_authentications
    gp.select(virtual.transport, gp.ISD_AID)
    with pytest.raises(CryptogramError):
        scp03.open_channel(virtual.transport, StaticKeys.single(GP_DEFAULT, kvn=0x31), LEVEL)
    assert card.failed_authentications == failures
