"""SCP02 host against the published osmocom/pySim trace (tests/unittests/test_globalplatform.py)."""
from __future__ import annotations

import pytest

from cardproto.apdu import CommandAPDU
from cardproto.errors import AuthenticationRejectedError, CryptogramError, ProtocolUsageError
from cardproto.gp import scp02
from cardproto.keys import KeyType, StaticKeys
from tests.cardproto.scripted import ScriptedTransport

h = bytes.fromhex
HOST_CHALLENGE = "40A62C37FA6304F8"
INIT_UPDATE_RSP = "00000000000000000000700200016B4524ABEE7CF32EA3838BC148F3"
EXT_AUTH = "8482010010BA6961667737C5BCEBECE14C7D6A4376"


def _keys(kvn: int = 0x20) -> StaticKeys:
    # pySim ck_3des_70: KIC / KID / KIK as ENC / MAC / DEK
    return StaticKeys(h("100102030405060708090a0b0c0d0e0f"), h("101102030405060708090a0b0c0d0e0f"),
                      h("102102030405060708090a0b0c0d0e0f"), kvn=kvn, key_type=KeyType.DES3)


def _open(card: ScriptedTransport) -> scp02.Scp02Channel:
    # pySim's SCP02 uses ICV encryption and the C-MAC on the modified APDU: i=55 behaviour
    return scp02.open_channel(card, _keys(), 0x01, h(HOST_CHALLENGE), i_param=0x55)


def test_mutual_authentication_reproduces_pysim_trace():
    card = ScriptedTransport([("805020000840A62C37FA6304F800", INIT_UPDATE_RSP + "9000"), (EXT_AUTH, "9000")])
    channel = _open(card)
    assert card.done
    assert channel.sequence_counter == h("0001")


@pytest.mark.parametrize(("plain", "wrapped"), [
    ("80F22002", "84F220020814DB34FA4341DCA8"),
    ("80ca006600", "84CA00660855ED7C5FF069512B00"),
    ("80F220020a4f0212345c054f9f70c5", "84F22002124F0212345C054F9F70C58FC1B380C4228AF8"),
    ("80f28002024f0000", "84F280020A4F003B95F09317DE6A4E00"),
])
def test_c_mac_with_encrypted_icv_chains_like_pysim(plain, wrapped):
    # pySim wraps the four cases in sequence on one session (the ICV chains); replay up to the case under test
    card = ScriptedTransport([("805020000840A62C37FA6304F800", INIT_UPDATE_RSP + "9000"), (EXT_AUTH, "9000")])
    channel = _open(card)
    sequence = ["80F22002", "80ca006600", "80F220020a4f0212345c054f9f70c5", "80f28002024f0000"]
    for item in sequence:
        out = channel.wrap(CommandAPDU.parse(h(item))).to_bytes()
        if item == plain:
            assert out == h(wrapped)
            return
    raise AssertionError("case not in sequence")


def test_scp02_card_cryptogram_mismatch_stops_before_external_authenticate():
    tampered = INIT_UPDATE_RSP[:-2] + "F2"
    card = ScriptedTransport([("805020000840A62C37FA6304F800", tampered + "9000")])
    with pytest.raises(CryptogramError):
        _open(card)
    assert card.ins_sent() == [0x50]


def test_scp02_rejected_external_authenticate_is_not_retried():
    card = ScriptedTransport([("805020000840A62C37FA6304F800", INIT_UPDATE_RSP + "9000"), (EXT_AUTH, "6982")])
    with pytest.raises(AuthenticationRejectedError):
        _open(card)
    assert card.ins_sent() == [0x50, 0x82]


def test_scp02_refuses_aes_keys_and_unsupported_i():
    with pytest.raises(ProtocolUsageError):
        scp02.open_channel(ScriptedTransport([]), StaticKeys.single(bytes(16)), 0x01)
    with pytest.raises(ProtocolUsageError):
        scp02.open_channel(ScriptedTransport([]), _keys(), 0x01, i_param=0x17)


def test_scp02_c_decryption_encrypts_padded_data_after_the_mac():
    # structural check only (no published level-03 SCP02 trace found): EXTERNAL AUTHENTICATE accepted as sent
    card = ScriptedTransport([("805020000840A62C37FA6304F800", INIT_UPDATE_RSP + "9000"), (None, "9000")])
    channel = scp02.open_channel(card, _keys(), 0x03, h(HOST_CHALLENGE))
    wrapped = channel.wrap(CommandAPDU(0x80, 0xE2, 0x80, 0x00, bytes(5)))
    assert wrapped.cla == 0x84
    assert len(wrapped.data) == 8 + 8  # 5 bytes padded to 8, encrypted, plus the 8-byte C-MAC
