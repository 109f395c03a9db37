"""What a virtual DESFire card stores: keys, applications, files, transactions and their JSON form."""
from __future__ import annotations

from dataclasses import dataclass, field

from .crypto import AES, DES, KEY_LENGTH, TK3DES, des_key_version

PICC_AID = b"\x00\x00\x00"
MAX_APPLICATIONS = 28
MAX_FILES = 32

# File types as GetFileSettings reports them.
STANDARD, BACKUP, VALUE, LINEAR_RECORD, CYCLIC_RECORD = 0, 1, 2, 3, 4

# Communication settings (low two bits of the file's CommSett byte).
PLAIN, MACED, FULL = 0, 1, 3
FREE = 0xE
NEVER = 0xF

# Key settings bits.
KS_MASTER_CHANGEABLE = 0x01
KS_FREE_DIRECTORY = 0x02
KS_FREE_CREATE_DELETE = 0x04
KS_CONFIG_CHANGEABLE = 0x08

# Memory accounting granule (the EEPROM is allocated in 32-byte blocks).
BLOCK = 32
APP_OVERHEAD = 2 * BLOCK  # directory entry and key table, approximate


def blocks(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


@dataclass(repr=False)
class Key:
    family: str
    value: bytearray
    aes_version: int = 0

    @property
    def version(self) -> int:
        return self.aes_version if self.family == AES else des_key_version(self.value)

    @classmethod
    def default(cls, family: str) -> Key:
        return cls(family, bytearray(KEY_LENGTH[family]), 0)

    def __repr__(self) -> str:  # never show key bytes
        return f"Key(family={self.family!r}, version={self.version}, value=<hidden>)"

    def to_state(self) -> dict:
        return {"family": self.family, "value": self.value.hex(), "version": self.version}

    @classmethod
    def from_state(cls, state: dict) -> Key:
        version = state["version"] if state["family"] == AES else 0
        return cls(state["family"], bytearray.fromhex(state["value"]), version)


@dataclass
class AccessRights:
    read: int
    write: int
    read_write: int
    change: int

    @classmethod
    def from_bytes(cls, raw: bytes) -> AccessRights:
        value = int.from_bytes(raw[:2], "little")
        return cls(value >> 12 & 0xF, value >> 8 & 0xF, value >> 4 & 0xF, value & 0xF)

    def to_bytes(self) -> bytes:
        value = self.read << 12 | self.write << 8 | self.read_write << 4 | self.change
        return value.to_bytes(2, "little")


@dataclass
class DataFile:
    """Standard and backup data files. Backup files write into `pending` until commit."""

    file_type: int
    comm: int
    rights: AccessRights
    size: int
    data: bytearray
    pending: bytearray | None = None
    iso_fid: int | None = None

    def allocation(self) -> int:
        return blocks(self.size) * (2 if self.file_type == BACKUP else 1)

    def size_fields(self) -> bytes:
        return self.size.to_bytes(3, "little")


@dataclass
class ValueFile:
    comm: int
    rights: AccessRights
    lower: int
    upper: int
    value: int
    limited_credit_enabled: bool
    limited_credit_value: int = 0
    pending: int | None = None
    # Limited credit is allowed once per debit transaction; the card tracks that flag.
    free_get_value: bool = False
    pending_limited: int | None = None
    iso_fid: int | None = None
    file_type: int = VALUE

    def allocation(self) -> int:
        return BLOCK

    def current(self) -> int:
        return self.value if self.pending is None else self.pending

    def size_fields(self) -> bytes:
        flags = (1 if self.limited_credit_enabled else 0) | (2 if self.free_get_value else 0)
        return (
            self.lower.to_bytes(4, "little", signed=True)
            + self.upper.to_bytes(4, "little", signed=True)
            + self.limited_credit_value.to_bytes(4, "little", signed=True)
            + bytes((flags,))
        )


@dataclass
class RecordFile:
    file_type: int
    comm: int
    rights: AccessRights
    record_size: int
    max_records: int
    records: list[bytes] = field(default_factory=list)  # oldest first
    pending: list[bytes] | None = None
    iso_fid: int | None = None
    # True while this transaction is still writing the record it opened.
    open_record: bool = False

    def allocation(self) -> int:
        return blocks(self.record_size * self.max_records)

    def current(self) -> list[bytes]:
        return self.records if self.pending is None else self.pending

    def size_fields(self) -> bytes:
        return (
            self.record_size.to_bytes(3, "little")
            + self.max_records.to_bytes(3, "little")
            + len(self.records).to_bytes(3, "little")
        )


File = DataFile | ValueFile | RecordFile


@dataclass
class Application:
    aid: bytes
    key_settings: int
    family: str
    keys: list[Key]
    files: dict[int, File] = field(default_factory=dict)
    iso_enabled: bool = False

    def key_settings2(self) -> int:
        family_bits = {DES: 0x00, TK3DES: 0x40, AES: 0x80}[self.family]
        return family_bits | (0x20 if self.iso_enabled else 0) | len(self.keys)

    def allocation(self) -> int:
        return APP_OVERHEAD + sum(f.allocation() for f in self.files.values())

    def has_pending(self) -> bool:
        return any(getattr(f, "pending", None) is not None for f in self.files.values())

    def discard_pending(self) -> None:
        for f in self.files.values():
            if isinstance(f, DataFile):
                f.pending = None
            elif isinstance(f, RecordFile):
                f.pending = None
                f.open_record = False
            elif isinstance(f, ValueFile):
                f.pending = None
                f.pending_limited = None


# -- JSON state ---------------------------------------------------------------
def file_to_state(f: File) -> dict:
    common = {"type": f.file_type, "comm": f.comm, "rights": f.rights.to_bytes().hex(), "iso_fid": f.iso_fid}
    if isinstance(f, DataFile):
        return {**common, "size": f.size, "data": f.data.hex()}
    if isinstance(f, ValueFile):
        return {
            **common,
            "lower": f.lower,
            "upper": f.upper,
            "value": f.value,
            "limited_credit_enabled": f.limited_credit_enabled,
            "limited_credit_value": f.limited_credit_value,
            "free_get_value": f.free_get_value,
        }
    return {**common, "record_size": f.record_size, "max_records": f.max_records,
            "records": [r.hex() for r in f.records]}


def file_from_state(state: dict) -> File:
    rights = AccessRights.from_bytes(bytes.fromhex(state["rights"]))
    kind = state["type"]
    if kind in (STANDARD, BACKUP):
        return DataFile(kind, state["comm"], rights, state["size"], bytearray.fromhex(state["data"]),
                        iso_fid=state.get("iso_fid"))
    if kind == VALUE:
        return ValueFile(state["comm"], rights, state["lower"], state["upper"], state["value"],
                         state["limited_credit_enabled"], state["limited_credit_value"],
                         free_get_value=state.get("free_get_value", False), iso_fid=state.get("iso_fid"))
    return RecordFile(kind, state["comm"], rights, state["record_size"], state["max_records"],
                      [bytes.fromhex(r) for r in state["records"]], iso_fid=state.get("iso_fid"))


def app_to_state(app: Application) -> dict:
    return {
        "aid": app.aid.hex(),
        "key_settings": app.key_settings,
        "family": app.family,
        "iso_enabled": app.iso_enabled,
        "keys": [k.to_state() for k in app.keys],
        "files": {str(no): file_to_state(f) for no, f in sorted(app.files.items())},
    }


def app_from_state(state: dict) -> Application:
    return Application(
        aid=bytes.fromhex(state["aid"]),
        key_settings=state["key_settings"],
        family=state["family"],
        keys=[Key.from_state(k) for k in state["keys"]],
        files={int(no): file_from_state(f) for no, f in state["files"].items()},
        iso_enabled=state.get("iso_enabled", False),
    )
