"""Card-side GlobalPlatform crypto framing for the virtual JCOP: SCP03 KDF, CMAC, CBC, SCP02 3DES MACs.

Every primitive comes from `cryptography`; this module only arranges keys,
blocks, IVs and padding the way the card does. It is written for the card and
shares nothing with `cardproto` on purpose (one shared mistake must not make
both sides agree).
"""
from __future__ import annotations

import hmac

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC
from cryptography.hazmat.primitives.kdf.kbkdf import KBKDFCMAC, CounterLocation, Mode


class PaddingError(ValueError):
    """ISO 9797-1 method 2 padding missing: the cryptogram was made with another key or is corrupt."""


def wipe(buffer: bytearray | None) -> None:
    if buffer is not None:
        buffer[:] = bytes(len(buffer))


def same(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(bytes(a), bytes(b))


# -- AES (SCP03) ---------------------------------------------------------------------------------
def aes_ecb(key: bytes | bytearray, block: bytes) -> bytes:
    enc = Cipher(algorithms.AES(bytes(key)), modes.ECB()).encryptor()  # noqa: S305 - single blocks (ICVs, KCV)
    return enc.update(bytes(block)) + enc.finalize()


def aes_cbc_encrypt(key: bytes | bytearray, iv: bytes, data: bytes) -> bytes:
    enc = Cipher(algorithms.AES(bytes(key)), modes.CBC(bytes(iv))).encryptor()
    return enc.update(bytes(data)) + enc.finalize()


def aes_cbc_decrypt(key: bytes | bytearray, iv: bytes, data: bytes) -> bytes:
    dec = Cipher(algorithms.AES(bytes(key)), modes.CBC(bytes(iv))).decryptor()
    return dec.update(bytes(data)) + dec.finalize()


def aes_cmac(key: bytes | bytearray, data: bytes) -> bytes:
    mac = CMAC(algorithms.AES(bytes(key)))
    mac.update(bytes(data))
    return mac.finalize()


def scp03_derive(key: bytes | bytearray, constant: int, context: bytes, bits: int) -> bytearray:
    """GP Amendment D 4.1.5 data derivation: SP 800-108 counter mode, CMAC-AES.

    Fixed input = label (11 zero bytes || derivation constant) || 00 ||
    L (2 bytes, in bits) || i (1-byte counter) || context; the counter sits
    at offset 15 of the fixed input, which KBKDFCMAC calls MiddleFixed.
    """
    fixed = bytes(11) + bytes((constant,)) + b"\x00" + bits.to_bytes(2, "big") + bytes(context)
    kdf = KBKDFCMAC(algorithm=algorithms.AES, mode=Mode.CounterMode, length=bits // 8, rlen=1, llen=None,
                    location=CounterLocation.MiddleFixed, break_location=15, label=None, context=None,
                    fixed=fixed)
    return bytearray(kdf.derive(bytes(key)))


def aes_kcv(key: bytes | bytearray) -> bytes:
    """GP 2.3 / Amendment D 7.2.2: the first 3 bytes of AES(key, 16 x 01)."""
    return aes_ecb(key, b"\x01" * 16)[:3]


# -- 3DES (SCP02) --------------------------------------------------------------------------------
def _tdes(key: bytes | bytearray) -> TripleDES:
    key = bytes(key)
    # cryptography deprecates 16-byte TripleDES keys; K1 K2 K1 is the same two-key 3DES.
    return TripleDES(key + key[:8] if len(key) == 16 else key)


def des3_cbc_encrypt(key: bytes | bytearray, data: bytes, iv: bytes = bytes(8)) -> bytes:
    enc = Cipher(_tdes(key), modes.CBC(bytes(iv))).encryptor()
    return enc.update(bytes(data)) + enc.finalize()


def des3_cbc_decrypt(key: bytes | bytearray, data: bytes, iv: bytes = bytes(8)) -> bytes:
    dec = Cipher(_tdes(key), modes.CBC(bytes(iv))).decryptor()
    return dec.update(bytes(data)) + dec.finalize()


def des3_ecb_decrypt(key: bytes | bytearray, data: bytes) -> bytes:
    dec = Cipher(_tdes(key), modes.ECB()).decryptor()  # noqa: S305 - GP 2.3 E.4.7 key encryption is ECB
    return dec.update(bytes(data)) + dec.finalize()


def des_ecb(key8: bytes | bytearray, block: bytes) -> bytes:
    enc = Cipher(TripleDES(bytes(key8) * 3), modes.ECB()).encryptor()  # noqa: S305 - single DES, one block
    return enc.update(bytes(block)) + enc.finalize()


def des3_kcv(key: bytes | bytearray) -> bytes:
    """GP 2.3 table 11-68: the first 3 bytes of 3DES-ECB(key, 8 x 00)."""
    enc = Cipher(_tdes(key), modes.ECB()).encryptor()  # noqa: S305
    return (enc.update(bytes(8)) + enc.finalize())[:3]


def full_3des_mac(key: bytes | bytearray, data: bytes) -> bytes:
    """SCP02 card/host cryptogram: 3DES-CBC over the padded data, last block (GP 2.3 E.4.2)."""
    return des3_cbc_encrypt(key, pad80(data, 8))[-8:]


def retail_mac(key: bytes | bytearray, data: bytes, icv: bytes) -> bytes:
    """ISO 9797-1 MAC algorithm 3 (single DES CBC with K1, 3DES on the last block), GP 2.3 E.4.4."""
    padded = pad80(data, 8)
    k1 = bytes(key[:8])
    chained = bytes(icv)
    if len(padded) > 8:
        chained = Cipher(TripleDES(k1 * 3), modes.CBC(chained)).encryptor().update(padded[:-8])[-8:]
    last = bytes(a ^ b for a, b in zip(chained, padded[-8:], strict=True))
    enc = Cipher(_tdes(key), modes.ECB()).encryptor()  # noqa: S305 - the final 3DES block of the retail MAC
    return enc.update(last) + enc.finalize()


# -- padding -------------------------------------------------------------------------------------
def pad80(data: bytes, block: int) -> bytes:
    data = bytes(data) + b"\x80"
    return data + bytes(-len(data) % block)


def unpad80(data: bytes) -> bytes:
    stripped = bytes(data).rstrip(b"\x00")
    if not stripped or stripped[-1] != 0x80:
        raise PaddingError("no 80 padding marker")
    return stripped[:-1]
