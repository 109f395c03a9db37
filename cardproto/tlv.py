"""BER-TLV (ISO/IEC 7816-4 annex D) parsing and building for card responses and command data.

Parsing takes untrusted card bytes: every malformation raises
MalformedResponseError, never IndexError or ValueError.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from .errors import MalformedResponseError


@dataclass(frozen=True)
class Tlv:
    tag: int
    value: bytes

    @property
    def constructed(self) -> bool:
        first = self.tag.to_bytes(max(1, (self.tag.bit_length() + 7) // 8), "big")[0]
        return bool(first & 0x20)

    def children(self, *, command: str = "") -> list[Tlv]:
        """The nested objects; `command` names the card command in any error (property tests)."""
        if not self.constructed:
            raise _bad(f"tag {self.tag:X} is primitive, it has no children", command)
        return parse(self.value, command=command)

    def to_bytes(self) -> bytes:
        return encode(self.tag, self.value)


def _bad(message: str, command: str) -> MalformedResponseError:
    return MalformedResponseError(f"{command + ': ' if command else ''}BER-TLV: {message}", command=command)


def read_tag(data: bytes, offset: int, *, command: str = "") -> tuple[int, int]:
    if offset >= len(data):
        raise _bad("tag expected, data ended", command)
    first = data[offset]
    tag = first
    offset += 1
    if first & 0x1F == 0x1F:
        # multi-byte tag: continue while bit 8 is set (at most 3 subsequent bytes by 7816-4)
        for count in range(3):
            if offset >= len(data):
                raise _bad("truncated multi-byte tag", command)
            byte = data[offset]
            tag = (tag << 8) | byte
            offset += 1
            if not byte & 0x80:
                break
            if count == 2:
                raise _bad("tag longer than 4 bytes", command)
    return tag, offset


def read_length(data: bytes, offset: int, *, command: str = "") -> tuple[int, int]:
    if offset >= len(data):
        raise _bad("length expected, data ended", command)
    first = data[offset]
    offset += 1
    if first < 0x80:
        return first, offset
    count = first & 0x7F
    if count == 0:
        raise _bad("indefinite length is not allowed", command)
    if count > 4:
        raise _bad(f"length field of {count} bytes", command)
    if offset + count > len(data):
        raise _bad("truncated length field", command)
    return int.from_bytes(data[offset:offset + count], "big"), offset + count


def iter_tlv(data: bytes, *, command: str = "", skip_padding: bool = True) -> Iterator[Tlv]:
    data = bytes(data)
    offset = 0
    while offset < len(data):
        # 00 between objects is padding (ISO 7816-4 5.2.2.1); FF is kept: FFxx are real private tags
        if skip_padding and data[offset] == 0x00:
            offset += 1
            continue
        tag, offset = read_tag(data, offset, command=command)
        length, offset = read_length(data, offset, command=command)
        if offset + length > len(data):
            raise _bad(f"tag {tag:X} claims {length} bytes, {len(data) - offset} remain", command)
        yield Tlv(tag, data[offset:offset + length])
        offset += length


def parse(data: bytes, *, command: str = "") -> list[Tlv]:
    return list(iter_tlv(data, command=command))


def find(tlvs: Iterable[Tlv], tag: int) -> Tlv | None:
    for item in tlvs:
        if item.tag == tag:
            return item
    return None


def find_all(tlvs: Iterable[Tlv], tag: int) -> list[Tlv]:
    return [item for item in tlvs if item.tag == tag]


def require(tlvs: Iterable[Tlv], tag: int, *, command: str = "") -> Tlv:
    found = find(tlvs, tag)
    if found is None:
        raise _bad(f"mandatory tag {tag:X} missing", command)
    return found


def encode_length(length: int) -> bytes:
    if length < 0:
        raise ValueError("negative length")
    if length < 0x80:
        return bytes((length,))
    size = (length.bit_length() + 7) // 8
    if size > 4:
        raise ValueError("length too large for BER-TLV")
    return bytes((0x80 | size,)) + length.to_bytes(size, "big")


def encode_tag(tag: int) -> bytes:
    if tag < 0:
        raise ValueError("negative tag")
    return tag.to_bytes(max(1, (tag.bit_length() + 7) // 8), "big")


def encode(tag: int, value: bytes | Iterable[Tlv]) -> bytes:
    if not isinstance(value, bytes | bytearray):
        value = b"".join(item.to_bytes() for item in value)
    return encode_tag(tag) + encode_length(len(value)) + bytes(value)
