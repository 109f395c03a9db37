"""Key diversification and derivation: SP 800-108 CMAC, NXP AN10922, GP KDF3, EMV CPS and VISA2.

Every function returns a fresh `bytearray` that the caller wipes
(`cardproto.crypto.wipe`) as soon as the key has been used.
"""
from __future__ import annotations

from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.kdf.kbkdf import KBKDFCMAC, CounterLocation, Mode

from .crypto import aes_cbc_encrypt, aes_ecb_encrypt, des3_cbc_encrypt, des3_ecb_encrypt

# GP key purpose numbers used by KDF3 / EMV / VISA2 templates (GlobalPlatformPro PlaintextKeys)
ENC, MAC, DEK = 1, 2, 3


def kbkdf_cmac_counter(key: bytes | bytearray, fixed_input: bytes, length: int, *,
                       counter_bytes: int = 1, counter_at: int = 0) -> bytearray:
    """NIST SP 800-108 counter mode with AES-CMAC over caller-built fixed input data.

    `counter_at` is the byte offset of the counter inside the fixed input
    (0 = before fixed data, len(fixed_input) = after, anything else = middle),
    which is how GP SCP03 places it.
    """
    if counter_at == 0:
        location, extra = CounterLocation.BeforeFixed, {}
    elif counter_at == len(fixed_input):
        location, extra = CounterLocation.AfterFixed, {}
    else:
        location, extra = CounterLocation.MiddleFixed, {"break_location": counter_at}
    kdf = KBKDFCMAC(algorithm=algorithms.AES, mode=Mode.CounterMode, length=length, rlen=counter_bytes,
                    llen=None, location=location, label=None, context=None, fixed=bytes(fixed_input),
                    **extra)
    return bytearray(kdf.derive(bytes(key)))


def sp800_108_cmac(key: bytes | bytearray, label: bytes, context: bytes, length_bits: int, *,
                   counter_bytes: int = 1, length_bytes: int = 2) -> bytearray:
    """SP 800-108 counter mode, CMAC-AES, fixed input `[i] || Label || 00 || Context || [L]`."""
    if length_bits % 8:
        raise ValueError("length_bits must be a multiple of 8")
    fixed = bytes(label) + b"\x00" + bytes(context) + length_bits.to_bytes(length_bytes, "big")
    return kbkdf_cmac_counter(key, fixed, length_bits // 8, counter_bytes=counter_bytes)


def scp03_kdf(key: bytes | bytearray, constant: int, context: bytes, length_bits: int) -> bytearray:
    """GP Amendment D 4.1.5: label = 11 x 00 || constant, then 00, [L]2, counter [i]1, context."""
    fixed = bytes(11) + bytes((constant,)) + b"\x00" + length_bits.to_bytes(2, "big") + bytes(context)
    return kbkdf_cmac_counter(key, fixed, length_bits // 8, counter_at=15)


def kdf3_jcop(master: bytes | bytearray, label: int, uid10: bytes, *, length_field: bool = False
              ) -> bytearray:
    """JCOP issuer KDF3: CMAC-AES counter mode over `[i] || 00 00 00 <label> || 00 || KDD(10)`.

    This is GlobalPlatformPro's "kdf3" template (PlaintextKeys.kdf_templates),
    whose published KCVs our tests reproduce; label 1/2/3 = ENC/MAC/DEK and the
    output has the master key's length. Seed 002 also writes an `[L]2 = 0080`
    suffix; `length_field=True` appends it, but no published vector confirms
    that variant, so it is opt-in until the issuer confirms its layout.
    """
    if not 1 <= label <= 0xFF:
        raise ValueError("label must be one byte (1 ENC, 2 MAC, 3 DEK)")
    if len(uid10) != 10:
        raise ValueError("KDF3 diversification data is the 10-byte KDD / UID")
    fixed = bytes((0, 0, 0, label, 0)) + bytes(uid10)
    if length_field:
        fixed += (len(master) * 8).to_bytes(2, "big")
    return kbkdf_cmac_counter(master, fixed, len(master))


def an10922_aes128(master: bytes | bytearray, div_input: bytes) -> bytearray:
    """NXP AN10922 section 2.2 AES-128 diversification: CMAC(K, 01 || M), M of 1..31 bytes.

    Padding and subkey choice follow CMAC itself (K2 when padded to 32 bytes,
    K1 when 01||M fills two blocks), so the standard CMAC over the same
    message gives the application note's result.
    """
    if len(master) != 16:
        raise ValueError("AN10922 AES-128 needs a 16-byte master key")
    if not 1 <= len(div_input) <= 31:
        raise ValueError("AN10922 diversification input must be 1..31 bytes")
    return _an10922_cmac_aes(master, b"\x01" + bytes(div_input))


def _an10922_cmac_aes(key: bytes | bytearray, message: bytes) -> bytearray:
    # AN10922 pads to 32 bytes (two blocks), not to the next block as plain CMAC would
    k1, k2 = _cmac_subkeys(key, aes_ecb_encrypt, 16, 0x87)
    if len(message) == 32:
        last_key, padded = k1, message
    else:
        last_key, padded = k2, message + b"\x80" + bytes(31 - len(message))
    body = padded[:-16] + bytes(a ^ b for a, b in zip(padded[-16:], last_key, strict=True))
    return bytearray(aes_cbc_encrypt(key, body)[-16:])


def an10922_2k3des(master: bytes | bytearray, div_input: bytes) -> bytearray:
    """NXP AN10922 section 2.4 two-key 3DES: CMAC-3DES of 21||M and 22||M, M of 1..15 bytes."""
    if len(master) != 16:
        raise ValueError("AN10922 2K3DES needs a 16-byte master key")
    if not 1 <= len(div_input) <= 15:
        raise ValueError("AN10922 2K3DES diversification input must be 1..15 bytes")
    out = bytearray()
    for constant in (0x21, 0x22):
        out += _an10922_cmac_des(master, bytes((constant,)) + bytes(div_input))
    return out


def an10922_3k3des(master: bytes | bytearray, div_input: bytes) -> bytearray:
    """NXP AN10922 section 2.5 three-key 3DES: CMAC-3DES of 31||M, 32||M, 33||M."""
    if len(master) != 24:
        raise ValueError("AN10922 3K3DES needs a 24-byte master key")
    if not 1 <= len(div_input) <= 15:
        raise ValueError("AN10922 3K3DES diversification input must be 1..15 bytes")
    out = bytearray()
    for constant in (0x31, 0x32, 0x33):
        out += _an10922_cmac_des(master, bytes((constant,)) + bytes(div_input))
    return out


def _an10922_cmac_des(key: bytes | bytearray, message: bytes) -> bytes:
    # two 8-byte blocks; padded with K2 when short, K1 when exactly 16 bytes
    k1, k2 = _cmac_subkeys(key, des3_ecb_encrypt, 8, 0x1B)
    if len(message) == 16:
        last_key, padded = k1, message
    else:
        last_key, padded = k2, message + b"\x80" + bytes(15 - len(message))
    body = padded[:-8] + bytes(a ^ b for a, b in zip(padded[-8:], last_key, strict=True))
    return des3_cbc_encrypt(key, body)[-8:]


def _cmac_subkeys(key, block_encrypt, size: int, rb: int) -> tuple[bytes, bytes]:
    """CMAC subkeys K1, K2 (NIST SP 800-38B 6.1); needed because AN10922 fixes the padded length."""
    def shift(block: bytes) -> bytes:
        value = (int.from_bytes(block, "big") << 1) & ((1 << (8 * size)) - 1)
        if block[0] & 0x80:
            value ^= rb
        return value.to_bytes(size, "big")

    l_block = block_encrypt(key, bytes(size))
    k1 = shift(l_block)
    return k1, shift(k1)


def emv_cps(master: bytes | bytearray, kdd: bytes, purpose: int) -> bytearray:
    """EMV CPS card key derivation as GlobalPlatformPro's "emv" template:
    3DES-ECB(master, KDD[4:10] || F0 || p || KDD[4:10] || 0F || p)."""
    _check_des_master(master, kdd, purpose)
    data = kdd[4:10] + bytes((0xF0, purpose)) + kdd[4:10] + bytes((0x0F, purpose))
    return bytearray(des3_ecb_encrypt(master, data))


def visa2(master: bytes | bytearray, kdd: bytes, purpose: int) -> bytearray:
    """VISA2 card key derivation as GlobalPlatformPro's "visa2" template:
    3DES-ECB(master, KDD[0:2] || KDD[4:8] || F0 || p || KDD[0:2] || KDD[4:8] || 0F || p)."""
    _check_des_master(master, kdd, purpose)
    part = kdd[0:2] + kdd[4:8]
    data = part + bytes((0xF0, purpose)) + part + bytes((0x0F, purpose))
    return bytearray(des3_ecb_encrypt(master, data))


def _check_des_master(master, kdd: bytes, purpose: int) -> None:
    if len(master) != 16:
        raise ValueError("EMV/VISA2 diversification uses a 16-byte 3DES master key")
    if len(kdd) != 10:
        raise ValueError("key diversification data (KDD) is 10 bytes")
    if purpose not in (ENC, MAC, DEK):
        raise ValueError("purpose must be 1 (ENC), 2 (MAC) or 3 (DEK)")


def scp02_session_key(static_key: bytes | bytearray, constant: bytes, sequence_counter: bytes) -> bytearray:
    """GP 2.3 E.4.1: 3DES-CBC(zero IV) of constant(2) || counter(2) || 00*12."""
    if len(constant) != 2 or len(sequence_counter) != 2:
        raise ValueError("SCP02 derivation constant and sequence counter are 2 bytes each")
    return bytearray(des3_cbc_encrypt(static_key, bytes(constant) + bytes(sequence_counter) + bytes(12)))
