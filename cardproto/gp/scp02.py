"""GlobalPlatform SCP02 (Card Specification 2.3 annex E), 3DES, for JCOP cards shipped with SCP02.

Implemented: i=15 and i=55 (three keys, explicit initiation, C-MAC on the
modified APDU, ICV encrypted for the C-MAC session), security levels C-MAC
(01) and C-MAC + C-DECRYPTION (03). The card cryptogram is checked before
EXTERNAL AUTHENTICATE, and nothing is ever retried.
"""
from __future__ import annotations

import os

from ..apdu import CommandAPDU, ResponseAPDU, exchange
from ..crypto import (
    des3_cbc_encrypt,
    des3_cbc_mac,
    des3_ecb_encrypt,
    des_ecb_encrypt,
    equal,
    pad80,
    retail_mac,
)
from ..errors import (
    AuthenticationRejectedError,
    CryptogramError,
    MalformedResponseError,
    ProtocolUsageError,
    ShortResponseError,
    answered_with,
)
from ..kdf import scp02_session_key
from ..keys import KeyType, StaticKeys
from .channel import C_DECRYPTION, C_MAC
from .secure import SecureChannelBase, check_level

# Session key derivation constants, GP 2.3 E.4.1
CONSTANT_C_MAC = b"\x01\x01"
CONSTANT_R_MAC = b"\x01\x02"
CONSTANT_DEK = b"\x01\x81"
CONSTANT_ENC = b"\x01\x82"

# i parameter bits, GP 2.3 E.1.1
I_THREE_KEYS = 0x01
I_CMAC_ON_UNMODIFIED = 0x02
I_ICV_ENCRYPTED = 0x10
I_PSEUDO_RANDOM_CHALLENGE = 0x40

LEVELS = (C_MAC, C_MAC | C_DECRYPTION)


class Scp02Channel(SecureChannelBase):
    protocol = "SCP02"

    def __init__(self, transport, *, security_level: int, i_param: int, s_enc: bytes, s_mac: bytes,
                 s_dek: bytes, kvn: int, kdd: bytes, sequence_counter: bytes) -> None:
        super().__init__(transport, security_level)
        self._s_enc = self._hold(s_enc)
        self._s_mac = self._hold(s_mac)
        self._s_dek = self._hold(s_dek)
        self.i_param = i_param
        self.icv = bytes(8)
        self.kvn = kvn
        self.kdd = kdd
        self.sequence_counter = sequence_counter

    def __repr__(self) -> str:
        return (f"Scp02Channel(kvn=0x{self.kvn:02X}, i=0x{self.i_param:02X}, "
                f"level=0x{self.security_level:02X}, open={self.is_open})")

    def _next_icv(self, mac: bytes) -> bytes:
        # ICV encryption: single DES with the first half of S-MAC (E.3.4)
        return des_ecb_encrypt(self._s_mac[:8], mac) if self.i_param & I_ICV_ENCRYPTED else mac

    def _mac(self, header: bytes, data: bytes) -> bytes:
        mac = retail_mac(self._s_mac, pad80(header + data, 8), self.icv)
        self.icv = self._next_icv(mac)
        return mac

    def wrap(self, apdu: CommandAPDU) -> CommandAPDU:
        if len(apdu.data) + 8 > 255 or (apdu.le or 0) > 256 or apdu.extended:
            raise ProtocolUsageError("SCP02 wrapping is for short APDUs only; split the data into blocks")
        cla = apdu.cla | 0x04
        # the MAC covers the modified header (CLA with bit 3, Lc counting the MAC) and the clear data
        mac = self._mac(bytes((cla, apdu.ins, apdu.p1, apdu.p2, len(apdu.data) + 8)), apdu.data)
        data = apdu.data
        if self.security_level & C_DECRYPTION and data:
            data = des3_cbc_encrypt(self._s_enc, pad80(data, 8))
        if len(data) + 8 > 255:
            raise ProtocolUsageError("SCP02: data too long once padded and encrypted")
        return CommandAPDU(cla, apdu.ins, apdu.p1, apdu.p2, data + mac, le=None if apdu.le is None else 0)

    def unwrap(self, response: ResponseAPDU, *, command: str) -> ResponseAPDU:
        return response  # R-MAC for SCP02 is not used by this system

    def encrypt_key(self, key: bytes | bytearray) -> bytes:
        """3DES-ECB with the session DEK (GP 2.3 E.4.7)."""
        if len(key) % 8:
            raise ProtocolUsageError("SCP02 key components are multiples of 8 bytes")
        return des3_ecb_encrypt(self._s_dek, bytes(key))

    key_type = KeyType.DES3


def card_cryptogram(s_enc: bytes, host_challenge: bytes, sequence_counter: bytes, card_challenge: bytes
                    ) -> bytes:
    return des3_cbc_mac(s_enc, pad80(bytes(host_challenge) + sequence_counter + card_challenge, 8))


def host_cryptogram(s_enc: bytes, host_challenge: bytes, sequence_counter: bytes, card_challenge: bytes
                    ) -> bytes:
    return des3_cbc_mac(s_enc, pad80(sequence_counter + card_challenge + bytes(host_challenge), 8))


def open_channel(transport, keys: StaticKeys, security_level: int = C_MAC,
                 host_challenge: bytes | None = None, *, i_param: int = 0x55) -> Scp02Channel:
    """INITIALIZE UPDATE, check the card cryptogram, EXTERNAL AUTHENTICATE; never retried."""
    check_level(security_level, LEVELS, "SCP02")
    if not i_param & I_THREE_KEYS or i_param & I_CMAC_ON_UNMODIFIED:
        raise ProtocolUsageError(f"SCP02 i={i_param:02X} is not supported (use 15 or 55)")
    if keys.key_type is not KeyType.DES3:
        raise ProtocolUsageError("SCP02 needs 3DES (16-byte) static keys")
    if host_challenge is None:
        host_challenge = os.urandom(8)
    if len(host_challenge) != 8:
        raise ProtocolUsageError("SCP02 needs an 8-byte host challenge")
    apdu = CommandAPDU(0x80, 0x50, keys.kvn, 0x00, bytes(host_challenge), le=0)
    response = exchange(transport, apdu, command="INITIALIZE UPDATE", retry_wrong_le=False)
    with answered_with(response.sw):
        channel, host_cg = _verify_card(transport, keys, security_level, host_challenge, response.data,
                                        i_param)
    # EXTERNAL AUTHENTICATE is MACed with a zero ICV and never encrypted
    header = bytes((0x84, 0x82, security_level, 0x00, 0x10))
    mac = channel._mac(header, host_cg)
    raw = header + host_cg + mac
    answer = ResponseAPDU.parse(transport.transmit(raw), command="EXTERNAL AUTHENTICATE")
    if answer.sw != 0x9000:
        channel.close()
        raise AuthenticationRejectedError(command="EXTERNAL AUTHENTICATE", sw=answer.sw, apdu=raw[:5])
    return channel


def _verify_card(transport, keys: StaticKeys, security_level: int, host_challenge: bytes, data: bytes,
                 i_param: int) -> tuple[Scp02Channel, bytes]:
    """Check the INITIALIZE UPDATE answer and the card cryptogram; the channel and host cryptogram."""
    if len(data) != 28:
        raise ShortResponseError(f"INITIALIZE UPDATE: {len(data)}-byte response, SCP02 needs 28",
                                 command="INITIALIZE UPDATE")
    kdd, kvn, scp = data[:10], data[10], data[11]
    sequence_counter, card_challenge, card_cg = data[12:14], data[14:20], data[20:28]
    if scp != 0x02:
        raise MalformedResponseError(f"INITIALIZE UPDATE: card offers SCP{scp:02X}, not SCP02",
                                     command="INITIALIZE UPDATE")
    # a KVN in the answer other than P1 is not refused here: some cards (sysmocom, pySim's trace) number
    # their SCP02 set differently; the card cryptogram decides whether the keys are right
    s_enc = scp02_session_key(keys.enc, CONSTANT_ENC, sequence_counter)
    s_mac = scp02_session_key(keys.mac, CONSTANT_C_MAC, sequence_counter)
    s_dek = scp02_session_key(keys.dek, CONSTANT_DEK, sequence_counter)
    try:
        if not equal(card_cryptogram(s_enc, host_challenge, sequence_counter, card_challenge), card_cg):
            raise CryptogramError("INITIALIZE UPDATE: card cryptogram does not verify: wrong static keys "
                                  "or KVN; EXTERNAL AUTHENTICATE not sent", command="INITIALIZE UPDATE")
        host_cg = host_cryptogram(s_enc, host_challenge, sequence_counter, card_challenge)
        channel = Scp02Channel(transport, security_level=security_level, i_param=i_param, s_enc=s_enc,
                               s_mac=s_mac, s_dek=s_dek, kvn=kvn, kdd=bytes(kdd),
                               sequence_counter=bytes(sequence_counter))
    finally:
        for key in (s_enc, s_mac, s_dek):
            key[:] = bytes(len(key))
    return channel, host_cg
