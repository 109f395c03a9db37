"""GlobalPlatform card commands: SELECT, GET DATA, GET STATUS, PUT KEY, DELETE KEY, STORE DATA, SET STATUS.

Each function takes a channel (`send`) or a bare transport (`transmit`),
builds the APDU per GP Card Specification 2.3 chapter 11 / Amendment D, and
checks the answer; any unexpected status word raises StatusWordError.
"""
from __future__ import annotations

from collections.abc import Iterator
from enum import IntEnum

from .. import tlv
from ..apdu import CommandAPDU, ResponseAPDU
from ..crypto import equal, kcv_aes, kcv_des3
from ..errors import KcvMismatchError, MalformedResponseError, ProtocolUsageError, answered_with
from ..keys import KeyType, StaticKeys
from .channel import as_channel
from .data import Cplc, KeyInfo, RegistryEntry, parse_cplc, parse_key_information, parse_status_entries

CLA_GP = 0x80
TAG_CPLC = 0x9F7F
TAG_KEY_INFORMATION = 0x00E0

# GP AIDs (GP 2.3; seed 000 names the JCOP system ones that must never be deleted)
ISD_AID = bytes.fromhex("A000000151000000")
# (plus the 7-byte ISD AID some JCOP cards report, GlobalPlatformPro TestParseTags.testParseISD)
JCOP_SYSTEM_AIDS = frozenset({bytes.fromhex("A0000001515350"), bytes.fromhex("A000000151000000"),
                              bytes.fromhex("A0000001510000")})


class CardLifeCycle(IntEnum):
    """Card (ISD) life cycle coding, GP 2.3 table 11-5."""

    OP_READY = 0x01
    INITIALIZED = 0x07
    SECURED = 0x0F
    CARD_LOCKED = 0x7F
    TERMINATED = 0xFF


class StatusScope(IntEnum):
    """SET STATUS / GET STATUS P1 (GP 2.3 tables 11-33 and 11-63)."""

    ISD = 0x80
    APPLICATIONS = 0x40
    LOAD_FILES = 0x20
    LOAD_FILES_AND_MODULES = 0x10
    SD_AND_ASSOCIATED = 0x60  # SET STATUS only


def select(transport_or_channel, aid: bytes, *, command: str = "SELECT") -> ResponseAPDU:
    """SELECT by AID (first or only occurrence), returning the FCI."""
    if not 5 <= len(aid) <= 16:
        raise ProtocolUsageError(f"{command}: an AID is 5 to 16 bytes, got {len(aid)}")
    apdu = CommandAPDU(0x00, 0xA4, 0x04, 0x00, bytes(aid), le=0)
    return as_channel(transport_or_channel).send(apdu, command=command)


def get_data(transport_or_channel, tag: int, *, cla: int = CLA_GP) -> bytes:
    """GET DATA for a one- or two-byte tag; returns the response data as the card sent it."""
    if not 0 <= tag <= 0xFFFF:
        raise ProtocolUsageError("GET DATA tag is at most two bytes")
    apdu = CommandAPDU(cla, 0xCA, tag >> 8, tag & 0xFF, le=0)
    return as_channel(transport_or_channel).send(apdu, command=f"GET DATA {tag:04X}").data


def cplc(transport_or_channel) -> Cplc:
    raw = get_data(transport_or_channel, TAG_CPLC)
    with answered_with(0x9000):
        return parse_cplc(raw)


def key_information(transport_or_channel) -> list[KeyInfo]:
    """Key Information Template: which key ids and KVNs the card holds (the safe probe)."""
    raw = get_data(transport_or_channel, TAG_KEY_INFORMATION)
    with answered_with(0x9000):
        return parse_key_information(raw)


def get_status(transport_or_channel, scope: StatusScope = StatusScope.APPLICATIONS,
               aid_filter: bytes = b"", *, max_rounds: int = 64) -> list[RegistryEntry]:
    """GET STATUS in the TLV format (P2 b2), following 6310 with 'next occurrence' requests."""
    channel = as_channel(transport_or_channel)
    entries: list[RegistryEntry] = []
    p2 = 0x02
    for _ in range(max_rounds):
        apdu = CommandAPDU(CLA_GP, 0xF2, int(scope), p2, tlv.encode(0x4F, bytes(aid_filter)), le=0)
        response = channel.send(apdu, command="GET STATUS", expected=(0x9000, 0x6310))
        with answered_with(response.sw):
            entries += parse_status_entries(response.data)
        if response.sw == 0x9000:
            return entries
        p2 = 0x03
    raise MalformedResponseError(f"GET STATUS: card keeps answering 6310 after {max_rounds} rounds",
                                 command="GET STATUS", sw=0x6310)


def _key_block(channel, key: bytes | bytearray, key_type: KeyType) -> tuple[bytes, bytes]:
    """Key data field of one key and its KCV, GP 2.3 table 11-68 / Amendment D 7.2.2."""
    encrypted = channel.encrypt_key(key)
    if key_type is KeyType.AES:
        kcv = kcv_aes(key)
        # Amendment D: type 88, length, the clear key length, the encrypted key, KCV
        body = bytes((len(key),)) + encrypted
    else:
        kcv = kcv_des3(key)
        body = encrypted
    return bytes((int(key_type),)) + tlv.encode_length(len(body)) + body + b"\x03" + kcv, kcv


def put_key(channel, new_keys: StaticKeys, *, replace_kvn: int = 0, first_key_id: int = 1) -> bytes:
    """PUT KEY of an ENC/MAC/DEK set under `new_keys.kvn`, checking the KCVs the card returns.

    `replace_kvn` 0 adds a key set; otherwise it is the KVN being replaced.
    Needs an open secure channel (the keys travel encrypted with its DEK).
    Returns the card's answer (new KVN || three KCVs).
    """
    if not getattr(channel, "secure", False):
        raise ProtocolUsageError("PUT KEY needs an open secure channel (keys are DEK-encrypted)")
    if not 1 <= new_keys.kvn <= 0x7F:
        raise ProtocolUsageError(f"PUT KEY: new KVN {new_keys.kvn:02X} outside 01..7F")
    if new_keys.key_type is not channel.key_type:
        raise ProtocolUsageError("PUT KEY: new keys must be of the channel's key type")
    data = bytearray((new_keys.kvn,))
    kcvs = []
    for key in (new_keys.enc, new_keys.mac, new_keys.dek):
        block, kcv = _key_block(channel, key, new_keys.key_type)
        data += block
        kcvs.append(kcv)
    apdu = CommandAPDU(CLA_GP, 0xD8, replace_kvn, 0x80 | first_key_id, bytes(data), le=0)
    response = channel.send(apdu, command="PUT KEY", redact=True)
    expected = bytes((new_keys.kvn,)) + b"".join(kcvs)
    if len(response.data) != len(expected):
        raise MalformedResponseError(f"PUT KEY: answer of {len(response.data)} bytes, expected "
                                     f"{len(expected)} (KVN and three KCVs)", command="PUT KEY",
                                     sw=response.sw)
    if not equal(response.data, expected):
        raise KcvMismatchError("PUT KEY: the KVN or KCVs the card returned differ from the keys sent; "
                               "the card's key set is unknown, probe before any authentication",
                               command="PUT KEY", sw=response.sw)
    return response.data


def delete_key(channel, *, kvn: int, key_id: int | None = None) -> None:
    """DELETE of keys by KVN (and key id), GP 2.3 11.2.2.3 (tags D0 key id, D2 KVN)."""
    data = b""
    if key_id is not None:
        data += tlv.encode(0xD0, bytes((key_id,)))
    data += tlv.encode(0xD2, bytes((kvn,)))
    as_channel(channel).send(CommandAPDU(CLA_GP, 0xE4, 0x00, 0x00, data, le=0), command="DELETE KEY")


def dgi(tag: int, data: bytes) -> bytes:
    """A Data Grouping Identifier block: tag(2) || length (1 byte, or FF + 2 bytes from 255)."""
    if not 0 <= tag <= 0xFFFF:
        raise ProtocolUsageError("DGI tag is two bytes")
    length = len(data)
    encoded = bytes((length,)) if length < 0xFF else b"\xff" + length.to_bytes(2, "big")
    return tag.to_bytes(2, "big") + encoded + bytes(data)


def store_data_blocks(data: bytes, *, block_size: int = 200, structure: int = 0x08,
                      first_block: int = 0) -> Iterator[CommandAPDU]:
    """STORE DATA commands for `data`: P1 b8 marks the last block, P2 numbers blocks from 0."""
    if not 1 <= block_size <= 239:
        raise ProtocolUsageError("STORE DATA block size must leave room for secure messaging (<= 239)")
    chunks = [data[i:i + block_size] for i in range(0, len(data), block_size)] or [b""]
    if first_block + len(chunks) > 256:
        raise ProtocolUsageError("STORE DATA: more than 256 blocks")
    for number, chunk in enumerate(chunks, start=first_block):
        last = 0x80 if number == first_block + len(chunks) - 1 else 0x00
        yield CommandAPDU(CLA_GP, 0xE2, last | structure, number, bytes(chunk), le=0)


def store_data(channel, dgi_tag: int, data: bytes, *, block_size: int = 200, redact: bool = False) -> None:
    """Send one DGI with STORE DATA (P1 data structure 'DGI'), split into numbered blocks."""
    for apdu in store_data_blocks(dgi(dgi_tag, data), block_size=block_size):
        as_channel(channel).send(apdu, command="STORE DATA", redact=redact)


def set_status(channel, scope: StatusScope, state: int, aid: bytes = b"") -> None:
    """SET STATUS (GP 2.3 11.10). Seed 002's `80 F0 0F 00` is not valid GP: to lock the card use
    `lock_card` (P1 80, P2 7F)."""
    if scope not in (StatusScope.ISD, StatusScope.APPLICATIONS, StatusScope.SD_AND_ASSOCIATED):
        raise ProtocolUsageError("SET STATUS scope is ISD, applications, or an SD with its applications")
    if scope is StatusScope.ISD:
        if state not in (CardLifeCycle.INITIALIZED, CardLifeCycle.SECURED, CardLifeCycle.CARD_LOCKED,
                         CardLifeCycle.TERMINATED):
            raise ProtocolUsageError(f"SET STATUS: {state:02X} is not a card life cycle state to set")
        if aid:
            raise ProtocolUsageError("SET STATUS of the card takes no AID")
    elif not aid:
        raise ProtocolUsageError("SET STATUS of an application needs its AID")
    apdu = CommandAPDU(CLA_GP, 0xF0, int(scope), state, bytes(aid))
    as_channel(channel).send(apdu, command="SET STATUS")


def secure_card(channel) -> None:
    set_status(channel, StatusScope.ISD, CardLifeCycle.SECURED)


def lock_card(channel) -> None:
    set_status(channel, StatusScope.ISD, CardLifeCycle.CARD_LOCKED)
