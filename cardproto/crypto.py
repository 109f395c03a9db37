"""Thin framing over `cryptography` primitives: AES/3DES block modes, CMAC, ISO padding, KCVs.

No cipher is implemented here; these helpers only pick modes, IVs and
padding the card protocols need, and accept keys as bytes or bytearray.
"""
from __future__ import annotations

import hmac

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .errors import MalformedResponseError

AES_BLOCK = 16
DES_BLOCK = 8


def _des3_key(key: bytes | bytearray) -> bytes:
    """Expand a 8/16-byte DES key to the 24-byte form (K1 K2 K1), so no deprecated 2-key path is used."""
    if len(key) == 8:
        return bytes(key) * 3
    if len(key) == 16:
        return bytes(key) + bytes(key[:8])
    if len(key) == 24:
        return bytes(key)
    raise ValueError("DES key must be 8, 16 or 24 bytes")


def aes_ecb_encrypt(key: bytes | bytearray, data: bytes) -> bytes:
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()  # noqa: S305 - one block, by protocol
    return enc.update(data) + enc.finalize()


def aes_cbc_encrypt(key: bytes | bytearray, data: bytes, iv: bytes = bytes(16)) -> bytes:
    enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return enc.update(data) + enc.finalize()


def aes_cbc_decrypt(key: bytes | bytearray, data: bytes, iv: bytes = bytes(16)) -> bytes:
    dec = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    return dec.update(data) + dec.finalize()


def aes_cmac(key: bytes | bytearray, data: bytes) -> bytes:
    mac = cmac.CMAC(algorithms.AES(key))
    mac.update(data)
    return mac.finalize()


def des3_ecb_encrypt(key: bytes | bytearray, data: bytes) -> bytes:
    enc = Cipher(TripleDES(_des3_key(key)), modes.ECB()).encryptor()  # noqa: S305 - GP key wrapping mode
    return enc.update(data) + enc.finalize()


def des3_ecb_decrypt(key: bytes | bytearray, data: bytes) -> bytes:
    dec = Cipher(TripleDES(_des3_key(key)), modes.ECB()).decryptor()  # noqa: S305
    return dec.update(data) + dec.finalize()


def des3_cbc_encrypt(key: bytes | bytearray, data: bytes, iv: bytes = bytes(8)) -> bytes:
    enc = Cipher(TripleDES(_des3_key(key)), modes.CBC(iv)).encryptor()
    return enc.update(data) + enc.finalize()


def des_ecb_encrypt(key8: bytes | bytearray, data: bytes) -> bytes:
    """Single DES as 3DES with K1=K2=K3 (cryptography has no single-DES class)."""
    return des3_ecb_encrypt(bytes(key8[:8]), data)


def pad80(data: bytes, block: int) -> bytes:
    """ISO/IEC 9797-1 padding method 2: always add 80, then 00 up to the block size."""
    pad = block - (len(data) % block)
    return bytes(data) + b"\x80" + bytes(pad - 1)


def unpad80(data: bytes, *, command: str = "") -> bytes:
    stripped = bytes(data).rstrip(b"\x00")
    if not stripped or stripped[-1] != 0x80 or len(data) - len(stripped) >= AES_BLOCK:
        raise MalformedResponseError(f"{command or 'response'}: bad ISO 9797-1 padding after decryption",
                                     command=command)
    return stripped[:-1]


def des3_cbc_mac(key: bytes | bytearray, data: bytes, iv: bytes = bytes(8)) -> bytes:
    """Full triple-DES CBC-MAC over already padded data (GP SCP02 card/host cryptograms)."""
    return des3_cbc_encrypt(key, data, iv)[-8:]


def retail_mac(key16: bytes | bytearray, data: bytes, icv: bytes = bytes(8)) -> bytes:
    """ISO 9797-1 MAC algorithm 3 (single DES CBC, final 3DES) over already padded data."""
    if len(data) % 8:
        raise ValueError("retail MAC input must be padded")
    k1 = bytes(key16[:8])
    chain = bytes(icv)
    for i in range(0, len(data) - 8, 8):
        block = bytes(a ^ b for a, b in zip(chain, data[i:i + 8], strict=True))
        chain = des_ecb_encrypt(k1, block)
    last = bytes(a ^ b for a, b in zip(chain, data[-8:], strict=True))
    return des3_ecb_encrypt(key16, last)


def kcv_aes(key: bytes | bytearray) -> bytes:
    """GP Amendment D key check value: first 3 bytes of AES(key, 01 * 16)."""
    return aes_ecb_encrypt(key, b"\x01" * 16)[:3]


def kcv_des3(key: bytes | bytearray) -> bytes:
    """GP key check value for DES keys: first 3 bytes of 3DES(key, 00 * 8)."""
    return des3_ecb_encrypt(key, bytes(8))[:3]


def equal(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(bytes(a), bytes(b))


def wipe(buffer: bytearray | None) -> None:
    if buffer is not None:
        for i in range(len(buffer)):
            buffer[i] = 0
