"""Card-side DESFire crypto framing: ciphers by key family, CMAC with IV chaining, CRCs, session keys.

Every block cipher comes from `cryptography`; this module only arranges keys,
blocks, IVs and padding the way the card does. It is written for the card and
shares nothing with `cardproto` on purpose.
"""
from __future__ import annotations

import zlib

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

# Key families as the card stores them. "des" is a 16-byte DES/2K3DES slot (a
# single-DES key is one whose halves are equal once parity bits are ignored).
DES = "des"
TK3DES = "3k3des"
AES = "aes"
KEY_LENGTH = {DES: 16, TK3DES: 24, AES: 16}

# Session key algorithms (what the secure channel runs on).
S_DES = "des"  # 8-byte key
S_2K3DES = "2k3des"  # 16-byte key
S_3K3DES = "3k3des"  # 24-byte key
S_AES = "aes"  # 16-byte key


def block_size(algorithm: str) -> int:
    return 16 if algorithm == S_AES else 8


def _cipher_algorithm(algorithm: str, key: bytes):
    key = bytes(key)
    if algorithm == S_AES:
        return algorithms.AES(key)
    # Expand to 24 bytes ourselves: cryptography deprecates 8- and 16-byte TripleDES keys.
    if len(key) == 8:
        key = key * 3
    elif len(key) == 16:
        key = key + key[:8]
    return TripleDES(key)


def ecb_encrypt(algorithm: str, key: bytes, data: bytes) -> bytes:
    enc = Cipher(_cipher_algorithm(algorithm, key), modes.ECB()).encryptor()  # noqa: S305 - one block at a time
    return enc.update(bytes(data)) + enc.finalize()


def ecb_decrypt(algorithm: str, key: bytes, data: bytes) -> bytes:
    dec = Cipher(_cipher_algorithm(algorithm, key), modes.ECB()).decryptor()  # noqa: S305
    return dec.update(bytes(data)) + dec.finalize()


def cbc_encrypt(algorithm: str, key: bytes, iv: bytes, data: bytes) -> bytes:
    enc = Cipher(_cipher_algorithm(algorithm, key), modes.CBC(bytes(iv))).encryptor()
    return enc.update(bytes(data)) + enc.finalize()


def cbc_decrypt(algorithm: str, key: bytes, iv: bytes, data: bytes) -> bytes:
    dec = Cipher(_cipher_algorithm(algorithm, key), modes.CBC(bytes(iv))).decryptor()
    return dec.update(bytes(data)) + dec.finalize()


def legacy_receive(algorithm: str, key: bytes, data: bytes) -> bytes:
    """Undo the D40 PCD "send mode" (PCD deciphers with chaining), using only the encipher primitive.

    The PCD computed C_i = D(P_i xor C_{i-1}) with C_0 = 0, so P_i = E(C_i) xor C_{i-1}.
    """
    bs = block_size(algorithm)
    out = bytearray()
    previous = bytes(bs)
    for i in range(0, len(data), bs):
        block = bytes(data[i : i + bs])
        out += xor(ecb_encrypt(algorithm, key, block), previous)
        previous = block
    return bytes(out)


def legacy_send(algorithm: str, key: bytes, data: bytes) -> bytes:
    """D40 card answer: plain CBC encryption with a zero IV (the PCD deciphers it in receive mode)."""
    return cbc_encrypt(algorithm, key, bytes(block_size(algorithm)), data)


def xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def rotate_left(data: bytes) -> bytes:
    return bytes(data[1:]) + bytes(data[:1])


def _shift_left(block: bytes) -> bytes:
    value = int.from_bytes(block, "big") << 1
    return (value & ((1 << (8 * len(block))) - 1)).to_bytes(len(block), "big")


def cmac_subkeys(algorithm: str, key: bytes) -> tuple[bytes, bytes]:
    """NIST SP 800-38B subkeys K1, K2 (Rb = 0x87 for 128-bit blocks, 0x1B for 64-bit)."""
    bs = block_size(algorithm)
    rb = 0x87 if bs == 16 else 0x1B
    level = ecb_encrypt(algorithm, key, bytes(bs))
    k1 = bytearray(_shift_left(level))
    if level[0] & 0x80:
        k1[-1] ^= rb
    k2 = bytearray(_shift_left(bytes(k1)))
    if k1[0] & 0x80:
        k2[-1] ^= rb
    return bytes(k1), bytes(k2)


def cmac(algorithm: str, key: bytes, data: bytes, iv: bytes | None = None) -> bytes:
    """CMAC (SP 800-38B) whose CBC starts from `iv`, as DESFire EV1 chains it; returns the full block.

    With a zero IV this is plain CMAC (tests check it against `cryptography`'s CMAC).
    """
    bs = block_size(algorithm)
    k1, k2 = cmac_subkeys(algorithm, key)
    data = bytes(data)
    if data and len(data) % bs == 0:
        last = xor(data[-bs:], k1)
        body = data[:-bs]
    else:
        tail_start = len(data) - (len(data) % bs)
        tail = data[tail_start:] + b"\x80"
        tail += bytes(bs - len(tail))
        last = xor(tail, k2)
        body = data[:tail_start]
    chained = cbc_encrypt(algorithm, key, iv if iv is not None else bytes(bs), body + last)
    return chained[-bs:]


def crc32(data: bytes) -> bytes:
    """DESFire CRC32: IEEE 802.3 polynomial, preset all ones, no final inversion (JAMCRC), LSB first."""
    return ((zlib.crc32(bytes(data)) ^ 0xFFFFFFFF) & 0xFFFFFFFF).to_bytes(4, "little")


def crc16(data: bytes) -> bytes:
    """ISO/IEC 14443-3 type A CRC (preset 0x6363, reflected 0x8408), LSB first, as D40 uses."""
    crc = 0x6363
    for byte in bytes(data):
        byte ^= crc & 0xFF
        byte = (byte ^ (byte << 4)) & 0xFF
        crc = ((crc >> 8) ^ (byte << 8) ^ (byte << 3) ^ (byte >> 4)) & 0xFFFF
    return crc.to_bytes(2, "little")


def pad_zero(data: bytes, bs: int) -> bytes:
    return bytes(data) + bytes(-len(data) % bs)


def pad_iso(data: bytes, bs: int = 16) -> bytes:
    out = bytes(data) + b"\x80"
    return out + bytes(-len(out) % bs)


def unpad_iso(data: bytes) -> bytes | None:
    stripped = bytes(data).rstrip(b"\x00")
    if not stripped or stripped[-1] != 0x80 or len(data) - len(stripped) >= 16:
        return None
    return stripped[:-1]


# -- keys -------------------------------------------------------------------
def strip_parity(key: bytes) -> bytes:
    return bytes(b & 0xFE for b in key)


def des_key_version(key: bytes) -> int:
    """DES/3DES keys carry their version in the parity bits of the first eight bytes (MSB first)."""
    version = 0
    for byte in bytes(key[:8]):
        version = (version << 1) | (byte & 1)
    return version


def auth_algorithm(family: str, key: bytes) -> str:
    """Which cipher an authentication with this stored key runs."""
    if family == AES:
        return S_AES
    if family == TK3DES:
        return S_3K3DES
    if strip_parity(key[:8]) == strip_parity(key[8:16]):
        return S_DES
    return S_2K3DES


def auth_key_bytes(family: str, key: bytes) -> bytes:
    return bytes(key[:8]) if auth_algorithm(family, key) == S_DES else bytes(key)


def ev1_session_key(algorithm: str, rnd_a: bytes, rnd_b: bytes) -> bytes:
    """Session key of AuthenticateLegacy/ISO/AES (DESFire EV1 data sheet, as libfreefare builds it)."""
    a, b = bytes(rnd_a), bytes(rnd_b)
    if algorithm == S_DES:
        return a[0:4] + b[0:4]
    if algorithm == S_2K3DES:
        return a[0:4] + b[0:4] + a[4:8] + b[4:8]
    if algorithm == S_3K3DES:
        return a[0:4] + b[0:4] + a[6:10] + b[6:10] + a[12:16] + b[12:16]
    return a[0:4] + b[0:4] + a[12:16] + b[12:16]


def ev2_session_vector(label: bytes, rnd_a: bytes, rnd_b: bytes) -> bytes:
    """SV1/SV2 of AuthenticateEV2First/NonFirst (AN12196 Table 14 steps 25-26)."""
    a, b = bytes(rnd_a), bytes(rnd_b)
    return label + b"\x00\x01\x00\x80" + a[0:2] + xor(a[2:8], b[0:6]) + b[6:16] + a[8:16]


def ev2_session_keys(key: bytes, rnd_a: bytes, rnd_b: bytes) -> tuple[bytearray, bytearray]:
    enc = cmac(S_AES, key, ev2_session_vector(b"\xa5\x5a", rnd_a, rnd_b))
    mac = cmac(S_AES, key, ev2_session_vector(b"\x5a\xa5", rnd_a, rnd_b))
    return bytearray(enc), bytearray(mac)


def mac_truncate(full: bytes) -> bytes:
    """EV2 MACt: the odd-indexed bytes of the CMAC (AN12196 section 4 / Table 17 step 14)."""
    return bytes(full[1::2])


def wipe(buffer: bytearray | None) -> None:
    if buffer is not None:
        buffer[:] = bytes(len(buffer))
