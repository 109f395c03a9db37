"""Holders for static secure-channel keys that wipe themselves and never show their bytes."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

from .crypto import kcv_aes, kcv_des3, wipe


class KeyType(IntEnum):
    """GP key type coding (GP Card Specification 2.3, table 11-16)."""

    DES3 = 0x80
    AES = 0x88


def _as_key(value: bytes | bytearray, name: str) -> bytearray:
    if not isinstance(value, bytes | bytearray):
        raise TypeError(f"{name} key must be bytes or bytearray")
    if len(value) not in (16, 24, 32):
        raise ValueError(f"{name} key must be 16, 24 or 32 bytes, got {len(value)}")
    # always our own copy, so wiping it cannot surprise the caller and the caller cannot keep it alive
    return bytearray(value)


@dataclass(eq=False)
class StaticKeys:
    """An ENC/MAC/DEK key set with its key version number (KVN).

    Use as a context manager, or call `wipe()` when done. `repr()` shows the
    KVN, type and KCVs only.
    """

    enc: bytearray
    mac: bytearray
    dek: bytearray
    kvn: int = 0
    key_type: KeyType = KeyType.AES
    _wiped: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        self.enc = _as_key(self.enc, "ENC")
        self.mac = _as_key(self.mac, "MAC")
        self.dek = _as_key(self.dek, "DEK")
        if not 0 <= self.kvn <= 0xFF:
            raise ValueError("kvn must be one byte")
        self.key_type = KeyType(self.key_type)
        if self.key_type is KeyType.DES3 and any(len(k) != 16 for k in (self.enc, self.mac, self.dek)):
            raise ValueError("DES3 (SCP02) keys must be 16 bytes")

    @classmethod
    def single(cls, key: bytes | bytearray, *, kvn: int = 0, key_type: KeyType = KeyType.AES) -> StaticKeys:
        """The same key for ENC, MAC and DEK (test cards, GP default key 40..4F)."""
        return cls(bytearray(key), bytearray(key), bytearray(key), kvn=kvn, key_type=key_type)

    def kcv(self, which: str) -> bytes:
        key = {"enc": self.enc, "mac": self.mac, "dek": self.dek}[which]
        return kcv_aes(key) if self.key_type is KeyType.AES else kcv_des3(key)

    def kcvs(self) -> tuple[bytes, bytes, bytes]:
        return self.kcv("enc"), self.kcv("mac"), self.kcv("dek")

    @property
    def wiped(self) -> bool:
        return self._wiped

    def wipe(self) -> None:
        for key in (self.enc, self.mac, self.dek):
            wipe(key)
        self._wiped = True

    def __enter__(self) -> StaticKeys:
        return self

    def __exit__(self, *exc) -> None:
        self.wipe()

    def __repr__(self) -> str:
        if self._wiped:
            return f"StaticKeys(kvn=0x{self.kvn:02X}, {self.key_type.name}, wiped)"
        kcvs = "/".join(k.hex().upper() for k in self.kcvs())
        return f"StaticKeys(kvn=0x{self.kvn:02X}, {self.key_type.name}, kcv={kcvs})"

    __str__ = __repr__
