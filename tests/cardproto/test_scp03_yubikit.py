"""Interop: our SCP03 host against yubikit's independent SCP03 host (yubikit.core.smartcard.scp).

yubikit plays the card's arithmetic here: its own KDF builds the card
cryptogram, its session state predicts our wrapped commands and MACs the
responses we must accept. Its PUT KEY layout differs from GP Amendment D, so
PUT KEY is not compared (NOTES-ENVIRONMENT).
"""
from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from yubikit.core.smartcard import scp as yk

from cardproto.apdu import CommandAPDU, ResponseAPDU
from cardproto.gp import scp03
from cardproto.keys import StaticKeys

keys16 = st.binary(min_size=16, max_size=16)
challenge = st.binary(min_size=8, max_size=8)


class _YubikitCard:
    """Answers INITIALIZE UPDATE with a cryptogram from yubikit's KDF, then checks EXTERNAL AUTHENTICATE."""

    def __init__(self, static: yk.StaticKeys, card_challenge: bytes) -> None:
        self.static = static
        self.card_challenge = card_challenge
        self.state: yk.ScpState | None = None
        self.host_cryptogram = b""

    def transmit(self, apdu: bytes) -> bytes:
        if apdu[1] == 0x50:
            host_challenge = apdu[5:13]
            context = host_challenge + self.card_challenge
            session = self.static.derive(context)
            card_cg = yk._derive(session.key_smac, yk._CARD_CRYPTOGRAM, context, 0x40)
            # yubikit's host, given the same card answer, gives the state and host cryptogram to expect
            answer = bytes(10) + b"\x30\x03\x70" + self.card_challenge + card_cg
            self.state, self.host_cryptogram = yk.ScpState.scp03_init(
                lambda *args: answer, yk.Scp03KeyParams(yk.KeyRef(1, 0x30), self.static),
                host_challenge=host_challenge)
            return answer + b"\x90\x00"
        if apdu[1] == 0x82:
            assert self.state is not None
            expected_mac = self.state.mac(bytes((0x84, 0x82, apdu[2], 0x00, 0x10)) + self.host_cryptogram)
            assert apdu == bytes((0x84, 0x82, apdu[2], 0x00, 0x10)) + self.host_cryptogram + expected_mac
            return b"\x90\x00"
        raise AssertionError("unexpected command")


@settings(max_examples=40, deadline=None)
@given(enc=keys16, mac=keys16, card_challenge=challenge, host_challenge=challenge,
       payload=st.binary(min_size=1, max_size=200), reply=st.binary(max_size=200))
def test_scp03_session_and_wrapping_agree_with_yubikit(enc, mac, card_challenge, host_challenge, payload,
                                                       reply):
    static = yk.StaticKeys(enc, mac, bytes(16))
    card = _YubikitCard(static, card_challenge)
    channel = scp03.open_channel(card, StaticKeys(enc, mac, bytes(16), kvn=0x30), 0x33, host_challenge)
    state = card.state
    assert state is not None

    # a data command: yubikit encrypts with counter 1 and MACs the modified header
    command = CommandAPDU(0x80, 0xE2, 0x90, 0x00, payload)
    encrypted = state.encrypt(payload)
    header = bytes((0x84, 0xE2, 0x90, 0x00, len(encrypted) + 8))
    expected = header + encrypted + state.mac(header + encrypted)
    assert channel.wrap(command).to_bytes() == expected

    # the response: R-ENC (0x80 counter IV) and R-MAC over the chained value, from yubikit's primitives
    if reply:
        cipher = yk._init_cipher(state._keys.key_senc, state._enc_counter - 1, True).encryptor()
        padded = reply + b"\x80" + bytes(15 - len(reply) % 16)
        body = cipher.update(padded) + cipher.finalize()
    else:
        body = b""
    rmac = yk._calculate_mac(state._keys.key_srmac, state._mac_chain, body + struct.pack("!H", 0x9000))[1]
    plain = channel.unwrap(ResponseAPDU(body + rmac, 0x9000), command="STORE DATA")
    assert plain.data == reply
    assert state.unmac(body + rmac, 0x9000) == body
