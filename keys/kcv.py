"""Key check values (KCV): the 3-byte fingerprint the database keeps instead of a key."""
from __future__ import annotations

from enum import StrEnum

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


class KcvScheme(StrEnum):
    # GP Card Specification Amendment D (SCP03) 4.1.2 / GP CS 2.3 for AES: AES(key, 01 * 16)
    GP = "gp"
    # NXP DESFire practice for AES keys: AES(key, 00 * 16)
    DESFIRE = "desfire"


_PLAIN = {KcvScheme.GP: b"\x01" * 16, KcvScheme.DESFIRE: b"\x00" * 16}


def kcv(key: bytes | bytearray, scheme: KcvScheme | str) -> str:
    """First 3 bytes of AES-ECB(key, block) as upper-case hex (what KeyVersion.kcv stores)."""
    scheme = KcvScheme(scheme)
    if len(key) not in (16, 24, 32):
        raise ValueError("an AES key is 16, 24 or 32 bytes")
    encryptor = Cipher(algorithms.AES(bytes(key)), modes.ECB()).encryptor()  # noqa: S305 - one block, a KCV
    return (encryptor.update(_PLAIN[scheme]) + encryptor.finalize())[:3].hex().upper()


def scheme_for_role(role: str) -> KcvScheme:
    """JCOP ISD keys (isd_enc/isd_mac/isd_dek) use the GP KCV; DESFire keys the DESFire one."""
    return KcvScheme.GP if role.startswith("isd_") else KcvScheme.DESFIRE
