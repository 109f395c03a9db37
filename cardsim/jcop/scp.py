"""Card side of GP secure channels: SCP03 (Amendment D) and SCP02 (GP 2.3 annex E) sessions.

A session is what the card keeps between INITIALIZE UPDATE and the end of
the channel: session keys, the security level, the MAC chaining value (or
SCP02 ICV) and the encryption counter. It checks incoming C-MACs, decrypts
C-DEC data, and protects responses (R-MAC, R-ENC). Any failure raises
SecureMessagingError; the card then drops the session, as GP requires.
"""
from __future__ import annotations

from dataclasses import dataclass

from .crypto import (
    PaddingError,
    aes_cbc_decrypt,
    aes_cbc_encrypt,
    aes_cmac,
    aes_ecb,
    des3_cbc_decrypt,
    des3_cbc_encrypt,
    des3_ecb_decrypt,
    des_ecb,
    full_3des_mac,
    pad80,
    retail_mac,
    same,
    scp03_derive,
    unpad80,
    wipe,
)

C_MAC, C_DEC, R_MAC, R_ENC = 0x01, 0x02, 0x10, 0x20

# Amendment D table 4-1 derivation constants
DD_CARD_CRYPTOGRAM, DD_HOST_CRYPTOGRAM, DD_CARD_CHALLENGE = 0x00, 0x01, 0x02
DD_S_ENC, DD_S_MAC, DD_S_RMAC = 0x04, 0x06, 0x07

# SCP03 i parameter bits (Amendment D 5.1)
I03_S16, I03_PSEUDO_RANDOM, I03_R_MAC, I03_R_ENC = 0x01, 0x10, 0x20, 0x40

# SCP02 i parameter bits (GP 2.3 E.1.1) and session key constants (E.4.1)
I02_ICV_ENCRYPTION = 0x10
SCP02_ENC, SCP02_C_MAC, SCP02_DEK = b"\x01\x82", b"\x01\x01", b"\x01\x81"


class SecureMessagingError(Exception):
    """A C-MAC that does not verify, bad padding, or a command the level forbids: answer 6982."""


class CryptogramMismatch(SecureMessagingError):
    """The host cryptogram of EXTERNAL AUTHENTICATE is wrong: the host holds other keys (answer 6300)."""


@dataclass
class Command:
    """One parsed C-APDU as the card received it (header bytes kept for MAC checks)."""

    cla: int
    ins: int
    p1: int
    p2: int
    data: bytes
    lc_field: bytes = b""  # Lc exactly as received (1 byte, or 00 hi lo): the MAC covers it
    le: int | None = None

    def header(self) -> bytes:
        return bytes((self.cla, self.ins, self.p1, self.p2)) + self.lc_field


def scp03_levels(i: int) -> tuple[int, ...]:
    """Security levels an SCP03 card with parameter i accepts in EXTERNAL AUTHENTICATE."""
    levels = [0x00, C_MAC, C_MAC | C_DEC]
    if i & I03_R_MAC or i & I03_R_ENC:
        levels += [C_MAC | R_MAC, C_MAC | C_DEC | R_MAC]
    if i & I03_R_ENC:
        levels.append(C_MAC | C_DEC | R_MAC | R_ENC)
    return tuple(levels)


class Scp03Session:
    """SCP03 session keys and state on the card side."""

    protocol = 3

    def __init__(self, static_enc: bytearray, static_mac: bytearray, static_dek: bytearray, *, kvn: int,
                 host_challenge: bytes, card_challenge: bytes, i: int) -> None:
        size = len(card_challenge)
        self.mac_size = size
        self.kvn = kvn
        self.i = i
        context = bytes(host_challenge) + bytes(card_challenge)
        self.s_enc = scp03_derive(static_enc, DD_S_ENC, context, len(static_enc) * 8)
        self.s_mac = scp03_derive(static_mac, DD_S_MAC, context, len(static_mac) * 8)
        self.s_rmac = scp03_derive(static_mac, DD_S_RMAC, context, len(static_mac) * 8)
        self.dek = bytearray(static_dek)  # SCP03 PUT KEY uses the static DEK (Amendment D 7.2.2.1)
        self.card_cryptogram = bytes(scp03_derive(self.s_mac, DD_CARD_CRYPTOGRAM, context, size * 8))
        self._host_cryptogram = bytes(scp03_derive(self.s_mac, DD_HOST_CRYPTOGRAM, context, size * 8))
        self.level = 0
        self.authenticated = False
        self.mac_chain = bytes(16)
        self.counter = 0

    def __repr__(self) -> str:
        return f"Scp03Session(kvn=0x{self.kvn:02X}, level=0x{self.level:02X}, S{self.mac_size})"

    def external_authenticate(self, command: Command) -> None:
        """Check the host cryptogram and the C-MAC of EXTERNAL AUTHENTICATE (never encrypted)."""
        size = self.mac_size
        if len(command.data) != 2 * size:
            raise SecureMessagingError("EXTERNAL AUTHENTICATE data length")
        body, mac = command.data[:size], command.data[size:]
        full = aes_cmac(self.s_mac, bytes(16) + command.header() + body)
        if not same(full[:size], mac):
            raise SecureMessagingError("EXTERNAL AUTHENTICATE C-MAC")
        if not same(body, self._host_cryptogram):
            raise CryptogramMismatch("host cryptogram")
        self.mac_chain = full
        self.level = command.p1
        self.authenticated = True

    def unwrap(self, command: Command) -> bytes:
        """Verify the C-MAC (chained) and decrypt C-DEC data; return the plain data field."""
        data = command.data
        if self.level & C_MAC:
            if len(data) < self.mac_size:
                raise SecureMessagingError("command shorter than its C-MAC")
            data, mac = data[:-self.mac_size], data[-self.mac_size:]
            full = aes_cmac(self.s_mac, self.mac_chain + command.header() + data)
            if not same(full[:self.mac_size], mac):
                raise SecureMessagingError("C-MAC")
            self.mac_chain = full
        if self.level & C_DEC:
            # Amendment D 6.2.6: the counter moves for every command, data or not
            self.counter += 1
            if data:
                if len(data) % 16:
                    raise SecureMessagingError("encrypted data not a multiple of 16 bytes")
                icv = aes_ecb(self.s_enc, self.counter.to_bytes(16, "big"))
                try:
                    data = unpad80(aes_cbc_decrypt(self.s_enc, icv, data))
                except PaddingError as exc:
                    raise SecureMessagingError("C-DEC padding") from exc
        return data

    def wrap(self, data: bytes, sw: int) -> bytes:
        """R-ENC then R-MAC over success and warning answers; errors go back bare (Amendment D 6.2.5)."""
        if not self.level & R_MAC or not (sw == 0x9000 or sw >> 8 in (0x62, 0x63)):
            return bytes(data)
        if self.level & R_ENC and data:
            icv = aes_ecb(self.s_enc, b"\x80" + self.counter.to_bytes(15, "big"))
            data = aes_cbc_encrypt(self.s_enc, icv, pad80(data, 16))
        rmac = aes_cmac(self.s_rmac, self.mac_chain + bytes(data) + sw.to_bytes(2, "big"))[:self.mac_size]
        return bytes(data) + rmac

    def decrypt_key(self, encrypted: bytes) -> bytearray:
        if len(encrypted) % 16:
            raise SecureMessagingError("encrypted key not a multiple of 16 bytes")
        return bytearray(aes_cbc_decrypt(self.dek, bytes(16), encrypted))

    def close(self) -> None:
        for key in (self.s_enc, self.s_mac, self.s_rmac, self.dek):
            wipe(key)
        self.authenticated = False


def pseudo_random_challenge(static_enc: bytes | bytearray, counter: bytes, aid: bytes, size: int) -> bytes:
    """Amendment D 6.2.2.1: card challenge = KDF(static ENC, 02, sequence counter || SD AID)."""
    return bytes(scp03_derive(static_enc, DD_CARD_CHALLENGE, bytes(counter) + bytes(aid), size * 8))


class Scp02Session:
    """SCP02 (3DES, explicit initiation, C-MAC on the modified APDU) on the card side."""

    protocol = 2
    mac_size = 8

    def __init__(self, static_enc: bytearray, static_mac: bytearray, static_dek: bytearray, *, kvn: int,
                 host_challenge: bytes, card_challenge: bytes, sequence_counter: bytes, i: int) -> None:
        self.kvn = kvn
        self.i = i
        derivation = bytes(12)
        self.s_enc = self._session_key(static_enc, SCP02_ENC, sequence_counter, derivation)
        self.s_mac = self._session_key(static_mac, SCP02_C_MAC, sequence_counter, derivation)
        self.dek = self._session_key(static_dek, SCP02_DEK, sequence_counter, derivation)
        challenge = bytes(sequence_counter) + bytes(card_challenge)
        self.card_cryptogram = full_3des_mac(self.s_enc, bytes(host_challenge) + challenge)
        self._host_cryptogram = full_3des_mac(self.s_enc, challenge + bytes(host_challenge))
        self.level = 0
        self.authenticated = False
        self.icv = bytes(8)

    @staticmethod
    def _session_key(static: bytearray, constant: bytes, counter: bytes, rest: bytes) -> bytearray:
        # GP 2.3 E.4.1: 3DES-CBC (zero ICV) of constant || sequence counter || 12 x 00
        return bytearray(des3_cbc_encrypt(static, constant + bytes(counter) + rest))

    def __repr__(self) -> str:
        return f"Scp02Session(kvn=0x{self.kvn:02X}, i=0x{self.i:02X}, level=0x{self.level:02X})"

    def _check_mac(self, header: bytes, data: bytes, mac: bytes) -> None:
        icv = self.icv
        if self.authenticated and self.i & I02_ICV_ENCRYPTION:
            icv = des_ecb(self.s_mac[:8], icv)  # E.3.4: the ICV of each later C-MAC is encrypted
        expected = retail_mac(self.s_mac, header + data, icv)
        if not same(expected, mac):
            raise SecureMessagingError("C-MAC")
        self.icv = expected

    def external_authenticate(self, command: Command) -> None:
        if len(command.data) != 16:
            raise SecureMessagingError("EXTERNAL AUTHENTICATE data length")
        body, mac = command.data[:8], command.data[8:]
        self._check_mac(command.header(), body, mac)
        if not same(body, self._host_cryptogram):
            raise CryptogramMismatch("host cryptogram")
        self.level = command.p1
        self.authenticated = True

    def unwrap(self, command: Command) -> bytes:
        if not self.level & C_MAC:
            return command.data
        if len(command.data) < 8:
            raise SecureMessagingError("command shorter than its C-MAC")
        data, mac = command.data[:-8], command.data[-8:]
        if self.level & C_DEC and data:
            if len(data) % 8:
                raise SecureMessagingError("encrypted data not a multiple of 8 bytes")
            try:
                data = unpad80(des3_cbc_decrypt(self.s_enc, data))
            except PaddingError as exc:
                raise SecureMessagingError("C-DEC padding") from exc
        # The C-MAC covers the modified header with Lc = clear data + MAC, and the clear data (E.4.4).
        header = bytes((command.cla, command.ins, command.p1, command.p2, len(data) + 8))
        self._check_mac(header, data, mac)
        return data

    def wrap(self, data: bytes, sw: int) -> bytes:
        return bytes(data)  # no R-MAC: EXTERNAL AUTHENTICATE only accepts levels 01 and 03 here

    def decrypt_key(self, encrypted: bytes) -> bytearray:
        if len(encrypted) % 8:
            raise SecureMessagingError("encrypted key not a multiple of 8 bytes")
        return bytearray(des3_ecb_decrypt(self.dek, encrypted))

    def close(self) -> None:
        for key in (self.s_enc, self.s_mac, self.dek):
            wipe(key)
        self.authenticated = False
