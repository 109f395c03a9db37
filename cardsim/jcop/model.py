"""What the virtual JCOP stores: key sets, registry (load files, applications), identity, memory, JSON."""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

from .crypto import aes_kcv, des3_kcv

ISD_AID = bytes.fromhex("A000000151000000")
# Seed 000: the JCOP system package (management applet package) and the ISD (security controller) must
# never be deleted; the ISD's package and module AIDs are those GET STATUS showed in miketlk/omfgp's trace.
SD_PACKAGE_AID = bytes.fromhex("A0000001515350")
SD_MODULE_AID = bytes.fromhex("A000000151535041")
SYSTEM_AIDS = frozenset({ISD_AID, SD_PACKAGE_AID, SD_MODULE_AID})

# Card life cycle (GP 2.3 table 11-5)
OP_READY, INITIALIZED, SECURED, CARD_LOCKED, TERMINATED = 0x01, 0x07, 0x0F, 0x7F, 0xFF
LIFE_CYCLE_NAMES = {OP_READY: "OP_READY", INITIALIZED: "INITIALIZED", SECURED: "SECURED",
                    CARD_LOCKED: "CARD_LOCKED", TERMINATED: "TERMINATED"}
# Application life cycle (GP 2.3 table 11-4)
APP_INSTALLED, APP_SELECTABLE, APP_LOCKED_BIT = 0x03, 0x07, 0x80
LOAD_FILE_LOADED = 0x01

KEY_TYPE_DES3, KEY_TYPE_AES = 0x80, 0x88
KEY_ID_ENC, KEY_ID_MAC, KEY_ID_DEK = 1, 2, 3

# Memory, seed 000: a J3R200 flexSecure measured >= 167736 bytes of free persistent memory and
# 4112 bytes of transient memory (CLEAR_ON_DESELECT) once the system content was in place.
NVM_FREE_DEFAULT = 167_736
VOLATILE_FREE_DEFAULT = 4_112
KEY_OVERHEAD = 8  # per key object: header, type, KVN, usage (approximate)
DGI_OVERHEAD = 4  # tag and length as stored
APP_INSTANCE_NVM = 512  # an applet instance without an explicit C7 quota (approximate)


@dataclass(repr=False)
class KeySet:
    """One key version: ENC/MAC/DEK (key ids 1..3) of one family, used by SCP03 (AES) or SCP02 (3DES)."""

    kvn: int
    key_type: int
    keys: dict[int, bytearray]
    scp_i: int

    @property
    def protocol(self) -> int:
        return 3 if self.key_type == KEY_TYPE_AES else 2

    @property
    def complete(self) -> bool:
        return all(key_id in self.keys for key_id in (KEY_ID_ENC, KEY_ID_MAC, KEY_ID_DEK))

    def kcv(self, key_id: int) -> bytes:
        key = self.keys[key_id]
        return aes_kcv(key) if self.key_type == KEY_TYPE_AES else des3_kcv(key)

    def allocation(self) -> int:
        return sum(len(key) + KEY_OVERHEAD for key in self.keys.values())

    def wipe(self) -> None:
        for key in self.keys.values():
            key[:] = bytes(len(key))

    def __repr__(self) -> str:  # never show key bytes
        kcvs = ",".join(self.kcv(key_id).hex() for key_id in sorted(self.keys))
        return f"KeySet(kvn=0x{self.kvn:02X}, SCP0{self.protocol}, kcvs={kcvs})"

    def to_state(self) -> dict:
        return {"kvn": self.kvn, "key_type": self.key_type, "scp_i": self.scp_i,
                "keys": {str(key_id): key.hex() for key_id, key in sorted(self.keys.items())}}

    @classmethod
    def from_state(cls, state: dict) -> KeySet:
        return cls(state["kvn"], state["key_type"],
                   {int(key_id): bytearray.fromhex(value) for key_id, value in state["keys"].items()},
                   state["scp_i"])


@dataclass
class LoadFile:
    aid: bytes
    modules: list[bytes] = field(default_factory=list)
    version: bytes = b"\x01\x00"
    size: int = 0
    system: bool = False
    life_cycle: int = LOAD_FILE_LOADED

    def to_state(self) -> dict:
        return {"aid": self.aid.hex(), "modules": [m.hex() for m in self.modules],
                "version": self.version.hex(), "size": self.size, "system": self.system,
                "life_cycle": self.life_cycle}

    @classmethod
    def from_state(cls, state: dict) -> LoadFile:
        return cls(bytes.fromhex(state["aid"]), [bytes.fromhex(m) for m in state["modules"]],
                   bytes.fromhex(state["version"]), state["size"], state["system"], state["life_cycle"])


@dataclass
class Application:
    aid: bytes
    load_file_aid: bytes
    module_aid: bytes
    life_cycle: int = APP_INSTALLED
    privileges: bytes = b"\x00\x00\x00"
    size: int = APP_INSTANCE_NVM

    def to_state(self) -> dict:
        return {"aid": self.aid.hex(), "load_file_aid": self.load_file_aid.hex(),
                "module_aid": self.module_aid.hex(), "life_cycle": self.life_cycle,
                "privileges": self.privileges.hex(), "size": self.size}

    @classmethod
    def from_state(cls, state: dict) -> Application:
        return cls(bytes.fromhex(state["aid"]), bytes.fromhex(state["load_file_aid"]),
                   bytes.fromhex(state["module_aid"]), state["life_cycle"],
                   bytes.fromhex(state["privileges"]), state["size"])


def system_load_files() -> list[LoadFile]:
    """The ROM-mask content a fresh card lists under GET STATUS P1 10 (as in miketlk/omfgp's trace)."""
    return [LoadFile(SD_PACKAGE_AID, [SD_MODULE_AID], b"\xff\xff", 0, system=True)]


@dataclass(frozen=True)
class Identity:
    """Who the chip is: UID, CPLC fields, key diversification data, IIN/CIN. Deterministic from a seed."""

    uid: bytes
    cplc: bytes
    kdd: bytes
    iin: bytes
    cin: bytes

    @classmethod
    def make(cls, seed: int | str | bytes | None = None, *, uid: bytes | None = None,
             kdd: bytes | None = None) -> Identity:
        if seed is None:
            material = os.urandom(32)
        else:
            raw = seed if isinstance(seed, bytes) else str(seed).encode()
            material = hashlib.sha256(b"cardsim.jcop identity|" + raw).digest()
        serial, batch = material[:4], material[4:6]
        uid = bytes(uid) if uid is not None else b"\x04" + material[6:12]
        if len(uid) not in (4, 7, 10):
            raise ValueError("an ISO 14443 UID has 4, 7 or 10 bytes")
        # NXP (4790), P71D321 (seed 000), OS id 4700 and zero OS release fields as a J3R180's CPLC shows
        # them (GlobalPlatformPro issue #383); fabrication date (YDDD BCD), serial and batch per chip.
        fields = [
            "4790", "D321", "4700", "0000", "0000", "3180", serial.hex(), batch.hex(),
            "4790", "9110", "0000", "0000", "0000", "0000", "00000000", "0000", "0000", "00000000",
        ]
        cplc = bytes.fromhex("".join(fields))
        # KDD: fabricator || IC type || serial || batch -- 10 bytes that tell chips apart, as the CPLC does
        kdd = bytes(kdd) if kdd is not None else cplc[0:4] + serial + batch
        if len(kdd) != 10:
            raise ValueError("key diversification data has 10 bytes")
        # IIN: a placeholder issuer number (BCD, F-padded); CIN: serial and batch, unique per chip
        return cls(uid=uid, cplc=cplc, kdd=kdd, iin=bytes.fromhex("999999FF"), cin=serial + batch)

    def to_state(self) -> dict:
        return {name: getattr(self, name).hex() for name in ("uid", "cplc", "kdd", "iin", "cin")}

    @classmethod
    def from_state(cls, state: dict) -> Identity:
        return cls(**{name: bytes.fromhex(state[name]) for name in ("uid", "cplc", "kdd", "iin", "cin")})
