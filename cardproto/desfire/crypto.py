"""DESFire crypto framing: CRC32, padding, CMAC with IV chaining, EV1 and EV2 session keys.

Every cipher comes from `cryptography`; this module only arranges blocks,
IVs and padding the way the DESFire data sheets and NXP AN12196/AN12343 say.
"""
from __future__ import annotations

import zlib

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import cmac as _cmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .constants import KeyType


def crc32(data: bytes) -> bytes:
    """DESFire CRC32: IEEE 802.3 polynomial, preset 0xFFFFFFFF, no final XOR, little-endian."""
    return ((zlib.crc32(data) ^ 0xFFFFFFFF) & 0xFFFFFFFF).to_bytes(4, "little")


def pad_zero(data: bytes, block: int) -> bytes:
    """Zero padding to a whole number of blocks (EV1 FULL mode); nothing added when aligned."""
    return bytes(data) + b"\x00" * (-len(data) % block)


def pad_iso(data: bytes, block: int) -> bytes:
    """ISO/IEC 9797-1 method 2 (0x80 then zeros); always adds at least one byte (EV2 FULL mode)."""
    out = bytes(data) + b"\x80"
    return out + b"\x00" * (-len(out) % block)


def unpad_iso(data: bytes) -> bytes | None:
    """Strip ISO 9797-1 method 2 padding; None when the padding is not valid."""
    stripped = bytes(data).rstrip(b"\x00")
    # Method 2 adds 0x80 and at most block-1 zeros: a longer run of zeros is not padding.
    if not stripped or stripped[-1] != 0x80 or len(data) - len(stripped) > 15:
        return None
    return stripped[:-1]


def rotate_left(data: bytes) -> bytes:
    return bytes(data[1:]) + bytes(data[:1])


def wipe(buffer: bytearray | None) -> None:
    if buffer is not None:
        for i in range(len(buffer)):
            buffer[i] = 0


def _des_halves_equal(key: bytes) -> bool:
    # DES keys carry the key version in the parity bits (bit 0 of each byte): ignore them.
    return all((a ^ b) & 0xFE == 0 for a, b in zip(key[:8], key[8:16], strict=True))


class BlockCipher:
    """One DESFire key (AES-128, DES, 2K3DES or 3K3DES) with CBC and ECB over `cryptography`.

    Holds its key in a bytearray; `wipe()` zeroes it. repr never shows the key.
    """

    def __init__(self, key: bytes | bytearray, key_type: KeyType = KeyType.AES) -> None:
        self.key_type = key_type
        if key_type == KeyType.AES:
            if len(key) != 16:
                raise ValueError("AES key must be 16 bytes")
            self._key = bytearray(key)
            self.block_size = 16
        else:
            if len(key) not in (8, 16, 24):
                raise ValueError("DES/3DES key must be 8, 16 or 24 bytes")
            if key_type == KeyType.TDES3K and len(key) != 24:
                raise ValueError("3K3DES key must be 24 bytes")
            raw = bytes(key) * 2 if len(key) == 8 else bytes(key)
            # Expanded to 24 bytes: cryptography deprecates short TripleDES keys; K1|K2|K1 is 2K3DES.
            self._key = bytearray(raw + raw[:8]) if len(raw) == 16 else bytearray(raw)
            self.block_size = 8
        self.is_single_des = key_type == KeyType.DES and _des_halves_equal(self._key)

    def __repr__(self) -> str:
        return f"BlockCipher({self.key_type.name}, key=<hidden>)"

    def _algorithm(self):
        return algorithms.AES(self._key) if self.block_size == 16 else TripleDES(self._key)

    def encrypt_cbc(self, iv: bytes, data: bytes) -> bytes:
        enc = Cipher(self._algorithm(), modes.CBC(bytes(iv))).encryptor()
        return enc.update(bytes(data)) + enc.finalize()

    def decrypt_cbc(self, iv: bytes, data: bytes) -> bytes:
        dec = Cipher(self._algorithm(), modes.CBC(bytes(iv))).decryptor()
        return dec.update(bytes(data)) + dec.finalize()

    def encrypt_block(self, block: bytes) -> bytes:
        enc = Cipher(self._algorithm(), modes.ECB()).encryptor()  # noqa: S305 - one block, by design
        return enc.update(bytes(block)) + enc.finalize()

    def decrypt_ecb(self, data: bytes) -> bytes:
        dec = Cipher(self._algorithm(), modes.ECB()).decryptor()  # noqa: S305 - D40 framing is per block
        return dec.update(bytes(data)) + dec.finalize()

    def wipe(self) -> None:
        wipe(self._key)


def _shift_left(block: bytes, rb: int) -> bytes:
    value = int.from_bytes(block, "big")
    carry = value >> (len(block) * 8 - 1)
    value = (value << 1) & ((1 << (len(block) * 8)) - 1)
    if carry:
        value ^= rb
    return value.to_bytes(len(block), "big")


def cmac_subkeys(cipher: BlockCipher) -> tuple[bytes, bytes]:
    """NIST SP 800-38B subkeys K1, K2."""
    rb = 0x87 if cipher.block_size == 16 else 0x1B
    l_block = cipher.encrypt_block(b"\x00" * cipher.block_size)
    k1 = _shift_left(l_block, rb)
    return k1, _shift_left(k1, rb)


def cmac(cipher: BlockCipher, data: bytes, iv: bytes | None = None) -> bytes:
    """CMAC (SP 800-38B) whose CBC chain starts from `iv` instead of zero.

    EV1 secure messaging chains the IV across commands, which `cryptography`'s
    CMAC object cannot do; with a zero IV the result equals the standard CMAC.
    """
    bs = cipher.block_size
    iv = bytes(bs) if iv is None else bytes(iv)
    k1, k2 = cmac_subkeys(cipher)
    data = bytes(data)
    if data and len(data) % bs == 0:
        last = bytes(a ^ b for a, b in zip(data[-bs:], k1, strict=True))
        body = data[:-bs] + last
    else:
        padded = pad_iso(data, bs)
        last = bytes(a ^ b for a, b in zip(padded[-bs:], k2, strict=True))
        body = padded[:-bs] + last
    return cipher.encrypt_cbc(iv, body)[-bs:]


def ev1_session_key(key_type: KeyType, rnd_a: bytes, rnd_b: bytes, single_des: bool = False) -> bytearray:
    """Session key after AuthenticateISO (0x1A) or AuthenticateAES (0xAA), per the EV1 data sheet.

    DES-family session keys get their parity (key version) bits cleared.
    """
    if key_type == KeyType.AES:
        return bytearray(rnd_a[0:4] + rnd_b[0:4] + rnd_a[12:16] + rnd_b[12:16])
    if key_type == KeyType.TDES3K:
        raw = rnd_a[0:4] + rnd_b[0:4] + rnd_a[6:10] + rnd_b[6:10] + rnd_a[12:16] + rnd_b[12:16]
    elif single_des:
        raw = (rnd_a[0:4] + rnd_b[0:4]) * 2
    else:
        raw = rnd_a[0:4] + rnd_b[0:4] + rnd_a[4:8] + rnd_b[4:8]
    return bytearray(b & 0xFE for b in raw)


def ev2_session_vectors(rnd_a: bytes, rnd_b: bytes) -> tuple[bytes, bytes]:
    """SV1 (for SesAuthENCKey) and SV2 (for SesAuthMACKey), AN12196 section 5.2 / AN12343."""
    mixed = bytes(a ^ b for a, b in zip(rnd_a[2:8], rnd_b[0:6], strict=True))
    tail = rnd_a[0:2] + mixed + rnd_b[6:16] + rnd_a[8:16]
    return b"\xA5\x5A\x00\x01\x00\x80" + tail, b"\x5A\xA5\x00\x01\x00\x80" + tail


def aes_cmac(key: bytes | bytearray, data: bytes) -> bytes:
    """Standard AES-CMAC from `cryptography` (EV2 uses plain CMAC, no IV chaining)."""
    mac = _cmac.CMAC(algorithms.AES(key))
    mac.update(bytes(data))
    return mac.finalize()


def ev2_session_keys(key: bytes | bytearray, rnd_a: bytes, rnd_b: bytes) -> tuple[bytearray, bytearray]:
    sv1, sv2 = ev2_session_vectors(rnd_a, rnd_b)
    return bytearray(aes_cmac(key, sv1)), bytearray(aes_cmac(key, sv2))


def truncate_mac(full: bytes) -> bytes:
    """EV2 MACt: the odd-numbered bytes (1, 3, ..., 15) of the 16-byte CMAC."""
    return bytes(full[1::2])


def ev2_iv(ses_enc: bytes | bytearray, ti: bytes, cmd_ctr: int, *, response: bool) -> bytes:
    """IV for EV2 FULL mode: E(SesAuthENCKey, A55A|TI|CmdCtr|0^8), 5AA5 for responses."""
    label = b"\x5A\xA5" if response else b"\xA5\x5A"
    block = label + bytes(ti) + cmd_ctr.to_bytes(2, "little") + b"\x00" * 8
    return BlockCipher(ses_enc, KeyType.AES).encrypt_block(block)
