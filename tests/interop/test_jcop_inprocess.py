"""Interop in process: two independent SCP03 hosts against the virtual JCOP 4 card.

Our host (`cardproto.gp`) opens SCP03 at every security level it offers, S8
and S16, and SCP02 at i=15 and i=55, then provisions the card the seed-002 way
(PUT KEY with KCV check, STORE DATA, lock). yubikit's SCP03 host
(`yubikit.securitydomain`, written by Yubico for the YubiKey's security
domain) opens its own channel at 0x33 and exchanges MACed and encrypted
APDUs with the same card. The same runs through real pcscd/vpcd elsewhere.
"""
from __future__ import annotations

import os

import pytest
from yubikit.core import TRANSPORT
from yubikit.core.smartcard import ApduError, SmartCardConnection
from yubikit.core.smartcard.scp import KeyRef, Scp03KeyParams
from yubikit.core.smartcard.scp import StaticKeys as YkStaticKeys
from yubikit.securitydomain import SecurityDomainSession

from cardproto import tlv
from cardproto.apdu import CommandAPDU
from cardproto.errors import CryptogramError, StatusWordError
from cardproto.gp import commands as gp
from cardproto.gp import scp02, scp03
from cardproto.keys import KeyType, StaticKeys
from cardsim.jcop import JCOP4Card

GP_KEY = bytes(range(0x40, 0x50))
ISD = gp.ISD_AID


def default_keys() -> StaticKeys:
    return StaticKeys.single(GP_KEY, kvn=0x30)


# --- our host -------------------------------------------------------------------------------------
@pytest.mark.parametrize("s16", [False, True], ids=["S8", "S16"])
@pytest.mark.parametrize("level", [0x01, 0x03, 0x13, 0x33])
def test_our_scp03_host_provisions_the_card_at_every_level(level, s16):
    card = JCOP4Card(seed=f"interop-{level}-{s16}")
    gp.select(card, ISD)
    cplc = gp.cplc(card)
    assert gp.key_information(card)  # the safe probe before authenticating
    channel = scp03.open_channel(card, default_keys(), level, s16=s16, sd_aid=ISD)
    assert channel.init.i & 0x01 == int(s16)
    assert gp.cplc(channel) == cplc
    new = StaticKeys(os.urandom(16), os.urandom(16), os.urandom(16), kvn=0x31)
    answer = gp.put_key(channel, new, replace_kvn=0x30)  # raises unless the card's KCVs equal ours
    assert answer[0] == 0x31
    payload = os.urandom(600)
    gp.store_data(channel, 0x0101, payload, block_size=180)
    gp.secure_card(channel)
    gp.lock_card(channel)
    channel.close()

    assert card.dgis[0x0101] == payload
    assert card.life_cycle == gp.CardLifeCycle.CARD_LOCKED
    held = {(k["kvn"], k["key_id"]): k["kcv"] for k in card.keys_held()[ISD.hex()]}
    assert held[(0x31, 1)] == new.kcv("enc").hex() and (0x30, 1) not in held
    gp.select(card, ISD)  # closing our side is not enough: the card ends its session on SELECT
    info = gp.key_information(card)
    assert {(k.kvn, k.key_id) for k in info} >= {(0x31, 1), (0x31, 2), (0x31, 3)}
    # the old version is gone (6A88), and the old key bytes under the new KVN fail the card cryptogram
    # check, which stops our host before EXTERNAL AUTHENTICATE: nothing counts towards the lockout
    with pytest.raises(StatusWordError) as missing:
        scp03.open_channel(card, default_keys(), level, s16=s16)
    assert missing.value.sw == 0x6A88
    with pytest.raises(CryptogramError):
        scp03.open_channel(card, StaticKeys.single(GP_KEY, kvn=0x31), level, s16=s16)
    assert card.failed_authentications == 0 and card.ins_counts[0x82] == 1
    # a locked card still opens a channel with the new keys (the unlock path) but refuses STORE DATA
    channel = scp03.open_channel(card, new, level, s16=s16, sd_aid=ISD)
    with pytest.raises(StatusWordError) as refused:
        gp.store_data(channel, 0x0102, b"late")
    assert refused.value.sw == 0x6985


@pytest.mark.parametrize("i_param", [0x15, 0x55])
@pytest.mark.parametrize("level", [0x01, 0x03])
def test_our_scp02_host_against_the_card(level, i_param):
    card = JCOP4Card(scp02_i=i_param)
    gp.select(card, ISD)
    keys = StaticKeys.single(GP_KEY, kvn=0x20, key_type=KeyType.DES3)
    channel = scp02.open_channel(card, keys, level, i_param=i_param)
    entries = gp.get_status(channel, gp.StatusScope.ISD)
    assert entries[0].aid == ISD and entries[0].life_cycle == 0x01
    new = StaticKeys.single(os.urandom(16), kvn=0x21, key_type=KeyType.DES3)
    gp.put_key(channel, new, replace_kvn=0x20)
    gp.store_data(channel, 0x0201, b"scp02 data")
    assert card.dgis[0x0201] == b"scp02 data"
    gp.select(card, ISD)
    scp02.open_channel(card, new, level, i_param=i_param)


# --- yubikit's independent host -------------------------------------------------------------------
class VirtualCardConnection(SmartCardConnection):
    """yubikit's connection interface over the virtual card's transmit (NFC: short APDUs, USB: extended)."""

    def __init__(self, card: JCOP4Card, transport: TRANSPORT) -> None:
        self.card = card
        self._transport = transport

    @property
    def transport(self) -> TRANSPORT:
        return self._transport

    def send_and_receive(self, apdu: bytes) -> tuple[bytes, int]:
        answer = self.card.transmit(apdu)
        return answer[:-2], int.from_bytes(answer[-2:], "big")


@pytest.mark.parametrize("transport", [TRANSPORT.NFC, TRANSPORT.USB], ids=["short", "extended"])
def test_yubikit_scp03_host_exchanges_maced_and_encrypted_apdus(transport):
    card = JCOP4Card(seed="yubikit")
    session = SecurityDomainSession(VirtualCardConnection(card, transport))
    session.authenticate(Scp03KeyParams(KeyRef(1, 0x30), YkStaticKeys.default()))
    assert card.session is not None and card.session.level == 0x33  # C-MAC, C-DEC, R-MAC, R-ENC

    # GET DATA (CLA 04): yubikit decrypts and un-MACs the card's answers
    assert session.get_data(0x9F7F) == bytes.fromhex("9F7F2A") + card.identity.cplc
    key_info = tlv.parse(session.get_data(0x00E0))
    assert {entry.value[:2] for entry in key_info[0].children()} >= {b"\x01\x30", b"\x02\x30", b"\x03\x30"}

    # GP commands in the proprietary class: STORE DATA (encrypted DGIs) and GET STATUS (encrypted answer)
    protocol = session.protocol
    payload = os.urandom(150)
    protocol.send_apdu(0x80, 0xE2, 0x88, 0x00, gp.dgi(0x0101, payload))
    assert card.dgis[0x0101] == payload
    status = protocol.send_apdu(0x80, 0xF2, 0x80, 0x02, bytes.fromhex("4F00"))
    assert status.startswith(bytes.fromhex("E3")) and ISD in status
    for _ in range(20):  # the MAC chain and the encryption counter stay in step
        assert protocol.send_apdu(0x80, 0xCA, 0x9F, 0x7F) == bytes.fromhex("9F7F2A") + card.identity.cplc

    # an error answer comes back bare (no R-MAC) and the channel stays usable
    with pytest.raises(ApduError) as caught:
        protocol.send_apdu(0x80, 0xCA, 0x12, 0x34)
    assert caught.value.sw == 0x6A88
    assert session.get_data(0x00CF) == bytes.fromhex("CF0A") + card.identity.kdd


def test_yubikit_and_our_host_see_the_same_card_state():
    card = JCOP4Card(seed="both")
    gp.select(card, ISD)
    channel = scp03.open_channel(card, default_keys(), 0x33, sd_aid=ISD)
    gp.store_data(channel, 0x0A01, b"written by cardproto")
    channel.close()

    session = SecurityDomainSession(VirtualCardConnection(card, TRANSPORT.NFC))
    session.authenticate(Scp03KeyParams(KeyRef(1, 0x30), YkStaticKeys.default()))
    session.protocol.send_apdu(0x80, 0xE2, 0x88, 0x00, gp.dgi(0x0A02, b"written by yubikit"))
    seen_by_yubikit = session.get_data(0x00E0)
    assert card.dgis == {0x0A01: b"written by cardproto", 0x0A02: b"written by yubikit"}

    gp.select(card, ISD)
    channel = scp03.open_channel(card, default_keys(), 0x13)
    answer = channel.send(CommandAPDU(0x80, 0xCA, 0x00, 0xE0, le=0), command="GET DATA key information")
    assert answer.data == seen_by_yubikit
