"""GlobalPlatform SCP03 (Card Specification 2.3 Amendment D v1.2): session setup and secure messaging.

The card cryptogram is checked before EXTERNAL AUTHENTICATE is sent, and
neither INITIALIZE UPDATE nor EXTERNAL AUTHENTICATE is ever repeated: a JCOP
card bricks itself after too many failed authentications.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from ..apdu import CommandAPDU, ResponseAPDU, exchange
from ..crypto import aes_cbc_decrypt, aes_cbc_encrypt, aes_cmac, aes_ecb_encrypt, equal, pad80, unpad80, wipe
from ..errors import (
    AuthenticationRejectedError,
    CryptogramError,
    MacError,
    MalformedResponseError,
    ProtocolUsageError,
    ShortResponseError,
    answered_with,
)
from ..kdf import scp03_kdf
from ..keys import KeyType, StaticKeys
from .channel import C_DECRYPTION, C_MAC, R_ENCRYPTION, R_MAC
from .secure import SecureChannelBase, check_level, is_protected_sw, lc_field

# Derivation constants, Amendment D table 4-1
CARD_CRYPTOGRAM = 0x00
HOST_CRYPTOGRAM = 0x01
CARD_CHALLENGE = 0x02
S_ENC = 0x04
S_MAC = 0x06
S_RMAC = 0x07

# i parameter bits, Amendment D 5.1
I_S16 = 0x01
I_PSEUDO_RANDOM_CHALLENGE = 0x10
I_R_MAC = 0x20
I_R_ENC = 0x40

LEVELS = (0x00, C_MAC, C_MAC | C_DECRYPTION, C_MAC | R_MAC, C_MAC | C_DECRYPTION | R_MAC,
          C_MAC | C_DECRYPTION | R_MAC | R_ENCRYPTION)


@dataclass(frozen=True)
class InitUpdateResponse:
    kdd: bytes
    kvn: int
    scp: int
    i: int
    card_challenge: bytes
    card_cryptogram: bytes
    sequence_counter: bytes | None

    @classmethod
    def parse(cls, data: bytes, *, s16: bool) -> InitUpdateResponse:
        size = 16 if s16 else 8
        base = 10 + 3 + 2 * size
        if len(data) not in (base, base + 3):
            raise ShortResponseError(f"INITIALIZE UPDATE: {len(data)}-byte response, SCP03 "
                                     f"{'S16' if s16 else 'S8'} needs {base} or {base + 3}",
                                     command="INITIALIZE UPDATE")
        if data[11] != 0x03:
            raise MalformedResponseError(f"INITIALIZE UPDATE: card offers SCP{data[11]:02X}, not SCP03",
                                         command="INITIALIZE UPDATE")
        return cls(kdd=bytes(data[:10]), kvn=data[10], scp=data[11], i=data[12],
                   card_challenge=bytes(data[13:13 + size]),
                   card_cryptogram=bytes(data[13 + size:base]),
                   sequence_counter=bytes(data[base:]) or None)


@dataclass
class SessionKeys:
    s_enc: bytearray
    s_mac: bytearray
    s_rmac: bytearray

    def __repr__(self) -> str:
        return "SessionKeys(<hidden>)"

    def wipe(self) -> None:
        for key in (self.s_enc, self.s_mac, self.s_rmac):
            wipe(key)


def derive_session_keys(keys: StaticKeys, host_challenge: bytes, card_challenge: bytes) -> SessionKeys:
    """Amendment D 6.2.1: S-ENC from ENC, S-MAC and S-RMAC from MAC, context = host || card challenge."""
    context = bytes(host_challenge) + bytes(card_challenge)
    bits = len(keys.enc) * 8
    return SessionKeys(scp03_kdf(keys.enc, S_ENC, context, bits),
                       scp03_kdf(keys.mac, S_MAC, context, len(keys.mac) * 8),
                       scp03_kdf(keys.mac, S_RMAC, context, len(keys.mac) * 8))


def cryptogram(s_mac: bytes | bytearray, constant: int, host_challenge: bytes, card_challenge: bytes,
               size: int = 8) -> bytes:
    """Card (constant 00) or host (01) authentication cryptogram, Amendment D 6.2.2."""
    return bytes(scp03_kdf(s_mac, constant, bytes(host_challenge) + bytes(card_challenge), size * 8))


def pseudo_random_card_challenge(static_enc: bytes | bytearray, sequence_counter: bytes, sd_aid: bytes,
                                 size: int = 8) -> bytes:
    """Amendment D 6.2.2.1: the card challenge a card with i bit 5 computes from its counter and AID."""
    return bytes(scp03_kdf(static_enc, CARD_CHALLENGE, bytes(sequence_counter) + bytes(sd_aid), size * 8))


class Scp03Channel(SecureChannelBase):
    protocol = "SCP03"

    def __init__(self, transport, session: SessionKeys, *, security_level: int, mac_size: int,
                 dek: bytes | bytearray, init: InitUpdateResponse) -> None:
        super().__init__(transport, security_level)
        self._s_enc = self._hold(session.s_enc)
        self._s_mac = self._hold(session.s_mac)
        self._s_rmac = self._hold(session.s_rmac)
        self._dek = self._hold(dek)
        self.mac_size = mac_size
        self.mac_chaining = bytes(16)
        self.counter = 0
        self.init = init
        self.kvn = init.kvn

    def __repr__(self) -> str:
        return (f"Scp03Channel(kvn=0x{self.kvn:02X}, level=0x{self.security_level:02X}, "
                f"S{self.mac_size}, open={self.is_open})")

    def _mac_command(self, cla: int, apdu: CommandAPDU, data: bytes, extended: bool) -> bytes:
        lc = len(data) + self.mac_size
        header = bytes(((cla & 0xFC) | 0x04, apdu.ins, apdu.p1, apdu.p2)) + lc_field(lc, extended)
        self.mac_chaining = aes_cmac(self._s_mac, self.mac_chaining + header + data)
        return self.mac_chaining[:self.mac_size]

    def wrap(self, apdu: CommandAPDU) -> CommandAPDU:
        return self._wrap(apdu, encrypt=True)

    def _wrap(self, apdu: CommandAPDU, *, encrypt: bool) -> CommandAPDU:
        if not self.security_level & C_MAC and encrypt:
            return apdu
        data = apdu.data
        if encrypt and self.security_level & C_DECRYPTION:
            # the counter moves for every command, with or without data (Amendment D 6.2.6)
            self.counter += 1
            if data:
                data = aes_cbc_encrypt(self._s_enc, pad80(data, 16), self._command_icv())
        extended = bool(apdu.extended) or len(data) + self.mac_size > 255 or (apdu.le or 0) > 256
        mac = self._mac_command(apdu.cla, apdu, data, extended)
        return CommandAPDU(apdu.cla | 0x04, apdu.ins, apdu.p1, apdu.p2, data + mac,
                           le=None if apdu.le is None else 0, extended=extended)

    def _command_icv(self) -> bytes:
        return aes_ecb_encrypt(self._s_enc, self.counter.to_bytes(16, "big"))

    def _response_icv(self) -> bytes:
        return aes_ecb_encrypt(self._s_enc, b"\x80" + self.counter.to_bytes(15, "big"))

    def unwrap(self, response: ResponseAPDU, *, command: str) -> ResponseAPDU:
        if not self.security_level & R_MAC or not is_protected_sw(response.sw):
            return response
        if len(response.data) < self.mac_size:
            raise ShortResponseError(f"{command}: response lacks its R-MAC", command=command, sw=response.sw)
        body, rmac = response.data[:-self.mac_size], response.data[-self.mac_size:]
        sw = response.sw.to_bytes(2, "big")
        expected = aes_cmac(self._s_rmac, self.mac_chaining + body + sw)[:self.mac_size]
        if not equal(expected, rmac):
            raise MacError(f"{command}: R-MAC does not verify", command=command, sw=response.sw)
        if self.security_level & R_ENCRYPTION and body:
            if len(body) % 16:
                raise MalformedResponseError(f"{command}: encrypted response not a multiple of 16 bytes",
                                             command=command, sw=response.sw)
            with answered_with(response.sw):
                body = unpad80(aes_cbc_decrypt(self._s_enc, body, self._response_icv()), command=command)
        return ResponseAPDU(body, response.sw)

    def encrypt_key(self, key: bytes | bytearray) -> bytes:
        """AES-CBC with the static DEK and a zero ICV (Amendment D 7.2.2.1), zero-padded to 16."""
        padded = bytes(key) + bytes(-len(key) % 16)
        return aes_cbc_encrypt(self._dek, padded)

    key_type = KeyType.AES


KeySource = StaticKeys | Callable[[bytes], StaticKeys]


def open_channel(transport, keys: KeySource, security_level: int = 0x33,
                 host_challenge: bytes | None = None, *, s16: bool = False,
                 sd_aid: bytes | None = None) -> Scp03Channel:
    """INITIALIZE UPDATE, check the card cryptogram, EXTERNAL AUTHENTICATE; return the open channel.

    `keys` is a StaticKeys, or a function from the card's 10-byte key
    diversification data to StaticKeys (master-key diversification). With
    `sd_aid`, a pseudo-random card challenge (i bit 5) is checked too. Raises
    CryptogramError without sending EXTERNAL AUTHENTICATE when the card does
    not prove it holds the same keys; nothing here is ever retried.
    """
    check_level(security_level, LEVELS, "SCP03")
    size = 16 if s16 else 8
    if host_challenge is None:
        host_challenge = os.urandom(size)
    if len(host_challenge) != size:
        raise ProtocolUsageError(f"SCP03 {'S16' if s16 else 'S8'} needs a {size}-byte host challenge")
    requested_kvn = keys.kvn if isinstance(keys, StaticKeys) else 0
    init_apdu = CommandAPDU(0x80, 0x50, requested_kvn, 0x00, bytes(host_challenge), le=0)
    response = exchange(transport, init_apdu, command="INITIALIZE UPDATE", retry_wrong_le=False)
    with answered_with(response.sw):
        channel, host_cg = _verify_card(transport, keys, security_level, host_challenge, response.data, s16,
                                        sd_aid)
    ext_auth = channel._wrap(CommandAPDU(0x80, 0x82, security_level, 0x00, host_cg), encrypt=False)
    raw = ext_auth.to_bytes()
    answer = ResponseAPDU.parse(transport.transmit(raw), command="EXTERNAL AUTHENTICATE")
    if answer.sw != 0x9000:
        channel.close()
        raise AuthenticationRejectedError(command="EXTERNAL AUTHENTICATE", sw=answer.sw, apdu=raw[:5])
    return channel


def _verify_card(transport, keys: KeySource, security_level: int, host_challenge: bytes, data: bytes,
                 s16: bool, sd_aid: bytes | None) -> tuple[Scp03Channel, bytes]:
    """Check the INITIALIZE UPDATE answer and the card cryptogram; the channel and host cryptogram."""
    size = 16 if s16 else 8
    init = InitUpdateResponse.parse(data, s16=s16)
    if bool(init.i & I_S16) != s16:
        raise MalformedResponseError(f"INITIALIZE UPDATE: card i={init.i:02X} disagrees with the "
                                     f"{'S16' if s16 else 'S8'} mode requested", command="INITIALIZE UPDATE")
    static = keys if isinstance(keys, StaticKeys) else keys(init.kdd)
    if static.key_type is not KeyType.AES:
        raise ProtocolUsageError("SCP03 needs AES static keys")
    # the KVN the card answers is reported as channel.kvn; the card cryptogram decides if the keys fit
    _check_card_supports(init.i, security_level)
    if sd_aid is not None and init.i & I_PSEUDO_RANDOM_CHALLENGE:
        if init.sequence_counter is None:
            raise MalformedResponseError("INITIALIZE UPDATE: pseudo-random challenge without a counter",
                                         command="INITIALIZE UPDATE")
        if not equal(pseudo_random_card_challenge(static.enc, init.sequence_counter, sd_aid, size),
                     init.card_challenge):
            raise CryptogramError("INITIALIZE UPDATE: card challenge is not the one derived from the "
                                  "sequence counter and AID (wrong keys or wrong card)",
                                  command="INITIALIZE UPDATE")
    session = derive_session_keys(static, host_challenge, init.card_challenge)
    try:
        card_cg = cryptogram(session.s_mac, CARD_CRYPTOGRAM, host_challenge, init.card_challenge, size)
        if not equal(card_cg, init.card_cryptogram):
            raise CryptogramError("INITIALIZE UPDATE: card cryptogram does not verify: wrong static keys "
                                  "or KVN; EXTERNAL AUTHENTICATE not sent", command="INITIALIZE UPDATE")
        host_cg = cryptogram(session.s_mac, HOST_CRYPTOGRAM, host_challenge, init.card_challenge, size)
        channel = Scp03Channel(transport, session, security_level=security_level, mac_size=size,
                               dek=static.dek, init=init)
    finally:
        session.wipe()
    return channel, host_cg


def _check_card_supports(i: int, level: int) -> None:
    if level & R_MAC and not i & I_R_MAC:
        raise ProtocolUsageError(f"card i={i:02X} has no R-MAC support; EXTERNAL AUTHENTICATE not sent")
    if level & R_ENCRYPTION and not i & I_R_ENC:
        raise ProtocolUsageError(f"card i={i:02X} has no R-ENCRYPTION support; "
                                 "EXTERNAL AUTHENTICATE not sent")
