"""Parsers for GP card data: CPLC (tag 9F7F), Key Information Template (E0), GET STATUS entries (E3).

All take untrusted card bytes and raise MalformedResponseError on anything
they cannot read.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .. import tlv
from ..errors import MalformedResponseError

# CPLC field names and sizes in order (GET DATA tag 9F7F), as GlobalPlatformPro GPData.CPLC reads them
CPLC_FIELDS: tuple[tuple[str, int], ...] = (
    ("ic_fabricator", 2), ("ic_type", 2), ("os_id", 2), ("os_release_date", 2), ("os_release_level", 2),
    ("ic_fabrication_date", 2), ("ic_serial_number", 4), ("ic_batch_identifier", 2),
    ("ic_module_fabricator", 2), ("ic_module_packaging_date", 2), ("icc_manufacturer", 2),
    ("ic_embedding_date", 2), ("ic_pre_personalizer", 2), ("ic_pre_personalization_date", 2),
    ("ic_pre_personalization_equipment_id", 4), ("ic_personalizer", 2), ("ic_personalization_date", 2),
    ("ic_personalization_equipment_id", 4),
)
CPLC_LENGTH = sum(size for _, size in CPLC_FIELDS)  # 42


@dataclass(frozen=True)
class Cplc:
    """Card Production Life Cycle data; every field kept as raw bytes (dates are YDDD BCD)."""

    fields: dict[str, bytes]

    def __getattr__(self, name: str) -> bytes:
        try:
            return self.__dict__["fields"][name]
        except KeyError:
            raise AttributeError(name) from None

    def as_hex(self) -> dict[str, str]:
        return {name: value.hex().upper() for name, value in self.fields.items()}


def parse_cplc(data: bytes) -> Cplc:
    """Parse a GET DATA 9F7F answer, with or without the 9F7F 2A header."""
    data = bytes(data)
    if data[:2] == b"\x9f\x7f":
        items = tlv.parse(data, command="GET DATA CPLC")
        body = tlv.require(items, 0x9F7F, command="GET DATA CPLC").value
    else:
        body = data
    if len(body) != CPLC_LENGTH:
        raise MalformedResponseError(f"GET DATA CPLC: {len(body)} bytes, CPLC is {CPLC_LENGTH}",
                                     command="GET DATA CPLC")
    out: dict[str, bytes] = {}
    offset = 0
    for name, size in CPLC_FIELDS:
        out[name] = body[offset:offset + size]
        offset += size
    return Cplc(out)


@dataclass(frozen=True)
class KeyInfo:
    """One key of the Key Information Template: (key id, KVN, first component type and length)."""

    key_id: int
    kvn: int
    key_type: int
    length: int
    components: tuple[tuple[int, int], ...] = field(default=())
    extended: bool = False


def parse_key_information(data: bytes) -> list[KeyInfo]:
    """Parse GET DATA tag E0 (GP 2.3 11.3.3.1), basic and extended ('FF') key information."""
    command = "GET DATA key information"
    items = tlv.parse(data, command=command)
    template = tlv.find(items, 0xE0)
    entries = template.children(command=command) if template is not None else items
    keys: list[KeyInfo] = []
    for entry in entries:
        if entry.tag != 0xC0:
            continue
        value = entry.value
        if len(value) < 4:
            raise MalformedResponseError(f"{command}: key information entry of {len(value)} bytes",
                                         command=command)
        key_id, kvn = value[0], value[1]
        if value[2] == 0xFF:
            # extended: FF type(1) length(2), then usage/access fields we keep unread
            if len(value) < 6:
                raise MalformedResponseError(f"{command}: truncated extended key information",
                                             command=command)
            components = ((value[3], int.from_bytes(value[4:6], "big")),)
            keys.append(KeyInfo(key_id, kvn, value[3], components[0][1], components, extended=True))
            continue
        pairs = value[2:]
        if len(pairs) % 2:
            raise MalformedResponseError(f"{command}: odd key type/length list", command=command)
        components = tuple((pairs[i], pairs[i + 1]) for i in range(0, len(pairs), 2))
        keys.append(KeyInfo(key_id, kvn, components[0][0], components[0][1], components))
    return keys


@dataclass(frozen=True)
class RegistryEntry:
    """One GET STATUS entry (tag E3, GP 2.3 table 11-36)."""

    aid: bytes
    life_cycle: int
    privileges: bytes = b""
    load_file_aid: bytes | None = None
    version: bytes | None = None
    modules: tuple[bytes, ...] = ()
    associated_sd: bytes | None = None


def parse_status_entries(data: bytes) -> list[RegistryEntry]:
    command = "GET STATUS"
    out: list[RegistryEntry] = []
    for entry in tlv.parse(data, command=command):
        if entry.tag != 0xE3:
            raise MalformedResponseError(f"{command}: expected E3 entries, got tag {entry.tag:X}",
                                         command=command)
        fields = entry.children(command=command)
        aid = tlv.require(fields, 0x4F, command=command).value
        life = tlv.require(fields, 0x9F70, command=command).value
        if len(life) < 1:
            raise MalformedResponseError(f"{command}: empty life cycle state", command=command)

        out.append(RegistryEntry(aid=aid, life_cycle=life[0], privileges=_value(fields, 0xC5) or b"",
                                 load_file_aid=_value(fields, 0xC4), version=_value(fields, 0xCE),
                                 modules=tuple(m.value for m in tlv.find_all(fields, 0x84)),
                                 associated_sd=_value(fields, 0xCC)))
    return out


def _value(fields: list[tlv.Tlv], tag: int) -> bytes | None:
    found = tlv.find(fields, tag)
    return None if found is None else found.value
