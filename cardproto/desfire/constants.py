"""DESFire command codes, file types, communication modes, key settings and access-rights packing.

Values from the NXP MIFARE DESFire EV1/EV2 data sheets (MF3ICDx1, MF3DHx2) as
reproduced in public libraries (libfreefare `mifare_desfire.c`, Proxmark3
`desfirecore.h`).
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

CLA = 0x90
STATUS_OK = 0x00
STATUS_ADDITIONAL_FRAME = 0xAF
PICC_AID = b"\x00\x00\x00"


class Cmd(IntEnum):
    AUTHENTICATE_LEGACY = 0x0A
    AUTHENTICATE_ISO = 0x1A
    AUTHENTICATE_AES = 0xAA
    AUTHENTICATE_EV2_FIRST = 0x71
    AUTHENTICATE_EV2_NON_FIRST = 0x77
    ADDITIONAL_FRAME = 0xAF
    GET_VERSION = 0x60
    GET_CARD_UID = 0x51
    FREE_MEMORY = 0x6E
    FORMAT_PICC = 0xFC
    GET_APPLICATION_IDS = 0x6A
    SELECT_APPLICATION = 0x5A
    CREATE_APPLICATION = 0xCA
    DELETE_APPLICATION = 0xDA
    GET_KEY_SETTINGS = 0x45
    CHANGE_KEY_SETTINGS = 0x54
    GET_KEY_VERSION = 0x64
    CHANGE_KEY = 0xC4
    GET_FILE_IDS = 0x6F
    GET_FILE_SETTINGS = 0xF5
    CHANGE_FILE_SETTINGS = 0x5F
    CREATE_STD_DATA_FILE = 0xCD
    CREATE_BACKUP_DATA_FILE = 0xCB
    CREATE_VALUE_FILE = 0xCC
    CREATE_LINEAR_RECORD_FILE = 0xC1
    CREATE_CYCLIC_RECORD_FILE = 0xC0
    DELETE_FILE = 0xDF
    READ_DATA = 0xBD
    WRITE_DATA = 0x3D
    GET_VALUE = 0x6C
    CREDIT = 0x0C
    DEBIT = 0xDC
    LIMITED_CREDIT = 0x1C
    WRITE_RECORD = 0x3B
    READ_RECORDS = 0xBB
    CLEAR_RECORD_FILE = 0xEB
    COMMIT_TRANSACTION = 0xC7
    ABORT_TRANSACTION = 0xA7


class FileType(IntEnum):
    STANDARD_DATA = 0x00
    BACKUP_DATA = 0x01
    VALUE = 0x02
    LINEAR_RECORD = 0x03
    CYCLIC_RECORD = 0x04


class CommMode(IntEnum):
    """File communication settings byte (bits 1..0)."""

    PLAIN = 0x00
    MAC = 0x01
    FULL = 0x03


class KeyType(IntEnum):
    """Crypto method bits of the CreateApplication key-count byte (bits 7..6)."""

    DES = 0x00  # DES and 2K3DES share this setting: the key bytes decide
    TDES3K = 0x40
    AES = 0x80

    @property
    def key_length(self) -> int:
        return {KeyType.DES: 16, KeyType.TDES3K: 24, KeyType.AES: 16}[self]


class AuthMode(IntEnum):
    NONE = 0
    LEGACY = 1  # native 0x0A: D40 secure messaging, not supported for MAC/FULL here
    EV1 = 2  # 0x1A (DES/3DES) and 0xAA (AES): CMAC with IV chaining
    EV2 = 3  # 0x71/0x77: TI, CmdCtr, truncated MAC


# Access right nibble values (data sheet, "access rights").
ACCESS_KEY_MAX = 0x0D
ACCESS_FREE = 0x0E
ACCESS_DENY = 0x0F


@dataclass(frozen=True)
class AccessRights:
    """The four access conditions of a file, each a key number, 0xE (free) or 0xF (never).

    On the wire: two bytes, little-endian, of Read<<12 | Write<<8 | ReadWrite<<4 | Change.
    """

    read: int = ACCESS_FREE
    write: int = ACCESS_FREE
    read_write: int = ACCESS_FREE
    change: int = ACCESS_FREE

    def __post_init__(self) -> None:
        for name in ("read", "write", "read_write", "change"):
            value = getattr(self, name)
            if not 0 <= value <= 0x0F:
                raise ValueError(f"access right {name} must be a nibble, got {value!r}")

    def to_int(self) -> int:
        return (self.read << 12) | (self.write << 8) | (self.read_write << 4) | self.change

    def to_bytes(self) -> bytes:
        return self.to_int().to_bytes(2, "little")

    @classmethod
    def from_bytes(cls, raw: bytes) -> AccessRights:
        value = int.from_bytes(raw[:2], "little")
        return cls((value >> 12) & 0xF, (value >> 8) & 0xF, (value >> 4) & 0xF, value & 0xF)


class KeySettings:
    """Bits of the application (or PICC) master key settings byte."""

    ALLOW_CHANGE_MASTER_KEY = 0x01
    FREE_LISTING = 0x02  # GetFileIDs/GetFileSettings/GetKeySettings without auth
    FREE_CREATE_DELETE = 0x04
    CONFIGURATION_CHANGEABLE = 0x08
    # Bits 7..4: ChangeKey access right: 0x0-0xD key number, 0xE same key, 0xF frozen.
    CHANGE_KEY_WITH_MASTER = 0x00
    CHANGE_KEY_SAME_KEY = 0xE0
    CHANGE_KEY_FROZEN = 0xF0

    @staticmethod
    def pack(*, change_key_access: int = 0x0, configuration_changeable: bool = True,
             free_create_delete: bool = False, free_listing: bool = True,
             allow_change_master_key: bool = True) -> int:
        if not 0 <= change_key_access <= 0x0F:
            raise ValueError("change_key_access must be a nibble")
        return ((change_key_access << 4) | (0x08 if configuration_changeable else 0)
                | (0x04 if free_create_delete else 0) | (0x02 if free_listing else 0)
                | (0x01 if allow_change_master_key else 0))
