"""ISD commands of the virtual JCOP once the channel is open: GET DATA/STATUS, PUT/DELETE KEY, STORE DATA,
SET STATUS, INSTALL, LOAD, DELETE (GP Card Specification 2.3 chapter 11, Amendment D 7)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..base import CardRemoved
from .model import (
    APP_INSTALLED,
    APP_INSTANCE_NVM,
    APP_SELECTABLE,
    CARD_LOCKED,
    DGI_OVERHEAD,
    INITIALIZED,
    KEY_TYPE_AES,
    KEY_TYPE_DES3,
    OP_READY,
    SD_PACKAGE_AID,
    SECURED,
    SYSTEM_AIDS,
    TERMINATED,
    Application,
    KeySet,
    LoadFile,
)
from .scp import Command, SecureMessagingError

if TYPE_CHECKING:
    from .card import JCOP4Card

ISD_PRIVILEGES = bytes.fromhex("9EFE80")  # as the ISD of miketlk/omfgp's trace reports them
GET_STATUS_CHUNK = 200  # leaves room for R-ENC padding and an S16 R-MAC in a short answer


class CardStatus(Exception):
    """Stop the command with this status word (the card's reason stays on the card side)."""

    def __init__(self, sw: int, reason: str = "") -> None:
        super().__init__(f"{sw:04X} {reason}".strip())
        self.sw = sw
        self.reason = reason


# -- BER-TLV, the little the card needs -------------------------------------------------------------------
def ber_length(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    if n < 0x100:
        return b"\x81" + bytes((n,))
    return b"\x82" + n.to_bytes(2, "big")


def tlv(tag: int, value: bytes) -> bytes:
    tag_bytes = tag.to_bytes(2, "big") if tag > 0xFF else bytes((tag,))
    return tag_bytes + ber_length(len(value)) + bytes(value)


def parse_tlvs(data: bytes) -> list[tuple[int, bytes]]:
    """Top-level BER-TLVs; 6A80 on anything malformed."""
    out, offset = [], 0
    while offset < len(data):
        tag = data[offset]
        offset += 1
        if tag & 0x1F == 0x1F:
            if offset >= len(data):
                raise CardStatus(0x6A80, "truncated tag")
            tag = (tag << 8) | data[offset]
            offset += 1
        if offset >= len(data):
            raise CardStatus(0x6A80, "missing length")
        length = data[offset]
        offset += 1
        if length & 0x80:
            count = length & 0x7F
            if count not in (1, 2) or offset + count > len(data):
                raise CardStatus(0x6A80, "bad length")
            length = int.from_bytes(data[offset:offset + count], "big")
            offset += count
        if offset + length > len(data):
            raise CardStatus(0x6A80, "value runs past the data")
        out.append((tag, bytes(data[offset:offset + length])))
        offset += length
    return out


def _lv_fields(data: bytes, count: int) -> list[bytes]:
    fields, offset = [], 0
    for _ in range(count):
        if offset >= len(data):
            raise CardStatus(0x6A80, "missing length-value field")
        length = data[offset]
        if offset + 1 + length > len(data):
            raise CardStatus(0x6A80, "length-value field runs past the data")
        fields.append(bytes(data[offset + 1:offset + 1 + length]))
        offset += 1 + length
    return fields


# -- SELECT answer and GET DATA ------------------------------------------------------------------
def isd_fci(card: JCOP4Card) -> bytes:
    """FCI of the ISD as a J3R180 answers it: AID and maximum command data length (9F65 FF).

    GlobalPlatformPro issue #383 shows a JCOP 4 J3R180 answering SELECT with
    6F10 8408A000000151000000 A5049F6501FF; the card recognition data stays behind GET DATA 0066.
    """
    return tlv(0x6F, tlv(0x84, card.isd_aid) + tlv(0xA5, tlv(0x9F65, b"\xff")))


def _oid(tail: str) -> bytes:
    return tlv(0x06, bytes.fromhex("2A864886FC6B" + tail))  # 1.2.840.114283.<tail>


def card_recognition_body(card: JCOP4Card) -> bytes:
    """GP 2.3 annex H card recognition data: GP card, version 2.3, SCP03 i / SCP02 i, Java Card."""
    body = _oid("01") + tlv(0x60, _oid("020203")) + tlv(0x63, _oid("03"))
    protocols = sorted({(ks.protocol, ks.scp_i) for ks in card.key_sets.values()}, reverse=True)
    for protocol, i in protocols:
        body += tlv(0x64, _oid(f"04{protocol:02X}{i:02X}"))
    # Java Card 3.0.4 (1.3.6.1.4.1.42.2.110.1.3), as JCOP 4 reports in tag 66
    body += tlv(0x66, tlv(0x06, bytes.fromhex("2B060104012A026E0103")))
    return body


def get_data(card: JCOP4Card, command: Command) -> tuple[bytes, int]:
    tag = (command.p1 << 8) | command.p2
    if tag == 0x9F7F:
        return tlv(0x9F7F, card.identity.cplc), 0x9000
    if tag == 0x00E0:
        return key_information(card), 0x9000
    if tag == 0x0066:
        return tlv(0x66, tlv(0x73, card_recognition_body(card))), 0x9000
    if tag == 0x0042:
        return tlv(0x42, card.identity.iin), 0x9000
    if tag == 0x0045:
        return tlv(0x45, card.identity.cin), 0x9000
    if tag == 0x00CF:
        return tlv(0xCF, card.identity.kdd), 0x9000
    if tag == 0x00C1:
        return tlv(0xC1, (card.sequence_counter & 0xFFFFFF).to_bytes(3, "big")), 0x9000
    if tag == 0xFF21:
        # Extended Card Resources Information (ETSI TS 102 226 / GP Amendment C): installed applications,
        # free non-volatile memory, free volatile memory
        body = (tlv(0x81, len(card.apps).to_bytes(2, "big"))
                + tlv(0x82, card.free_memory().to_bytes(4, "big"))
                + tlv(0x83, card.volatile_free.to_bytes(4, "big")))
        return tlv(0xFF21, body), 0x9000
    raise CardStatus(0x6A88, f"no data object {tag:04X}")


def key_information(card: JCOP4Card) -> bytes:
    """Key Information Template (GP 2.3 11.3.3.1): C0 {key id, KVN, type, length} per key."""
    entries = b""
    for kvn in sorted(card.key_sets):
        key_set = card.key_sets[kvn]
        for key_id in sorted(key_set.keys):
            entries += tlv(0xC0, bytes((key_id, kvn, key_set.key_type, len(key_set.keys[key_id]))))
    return tlv(0xE0, entries)


# -- GET STATUS ----------------------------------------------------------------------------------
def _registry_entries(card: JCOP4Card, p1: int) -> list[tuple[bytes, bytes]]:
    isd = tlv(0xCC, card.isd_aid)
    if p1 == 0x80:
        return [(card.isd_aid, tlv(0x4F, card.isd_aid) + tlv(0x9F70, bytes((card.life_cycle,)))
                 + tlv(0xC5, ISD_PRIVILEGES) + tlv(0xC4, SD_PACKAGE_AID) + isd)]
    if p1 == 0x40:
        return [(app.aid, tlv(0x4F, app.aid) + tlv(0x9F70, bytes((app.life_cycle,)))
                 + tlv(0xC5, app.privileges) + tlv(0xC4, app.load_file_aid) + isd)
                for app in card.apps.values()]
    entries = []
    for lf in card.load_files.values():
        value = tlv(0x4F, lf.aid) + tlv(0x9F70, bytes((lf.life_cycle,))) + tlv(0xCE, lf.version)
        if p1 == 0x10:
            value += b"".join(tlv(0x84, module) for module in lf.modules)
        entries.append((lf.aid, value + isd))
    return entries


def get_status(card: JCOP4Card, command: Command) -> tuple[bytes, int]:
    if command.p1 not in (0x80, 0x40, 0x20, 0x10):
        raise CardStatus(0x6A86, "GET STATUS P1")
    if command.p2 & 0xFC or not command.p2 & 0x02:
        raise CardStatus(0x6A86, "GET STATUS answers in the TLV format only (P2 02/03)")
    prefix = b""
    for tag, value in parse_tlvs(command.data):
        if tag == 0x4F:
            prefix = value
    if command.p2 & 0x01:
        pending = card.status_pending
        if not pending:
            raise CardStatus(0x6A86, "no GET STATUS to continue")
    else:
        entries = _registry_entries(card, command.p1)
        pending = [tlv(0xE3, value) for aid, value in entries if aid.startswith(prefix)]
        if not pending:
            raise CardStatus(0x6A88, "no matching entry")
    answer = b""
    while pending and (not answer or len(answer) + len(pending[0]) <= GET_STATUS_CHUNK):
        answer += pending.pop(0)
    card.status_pending = pending
    return answer, 0x6310 if pending else 0x9000


# -- keys ----------------------------------------------------------------------------------------
def put_key(card: JCOP4Card, command: Command) -> tuple[bytes, int]:
    """PUT KEY: a new key set (P1 00) or a replacement (P1 = old KVN), keys encrypted with the DEK."""
    session = card.session
    data = command.data
    if not data:
        raise CardStatus(0x6A80, "no key data")
    new_kvn, first_id, multiple = data[0], command.p2 & 0x7F, bool(command.p2 & 0x80)
    if not 1 <= new_kvn <= 0x7F or not 1 <= first_id <= 3:
        raise CardStatus(0x6A80, "KVN 01..7F and key id 1..3")
    expected_type = KEY_TYPE_AES if session.protocol == 3 else KEY_TYPE_DES3
    keys: dict[int, bytearray] = {}
    offset, key_id = 1, first_id
    try:
        while offset < len(data):
            if key_id > 3:
                raise CardStatus(0x6A80, "more than three keys")
            key_type = data[offset]
            if key_type != expected_type:
                raise CardStatus(0x6A80, f"key type {key_type:02X} does not fit this channel's DEK")
            length, offset = _read_length(data, offset + 1)
            value = data[offset:offset + length]
            offset += length
            if len(value) != length or offset >= len(data):
                raise CardStatus(0x6A80, "key block runs past the data")
            kcv_length = data[offset]
            kcv = data[offset + 1:offset + 1 + kcv_length]
            offset += 1 + kcv_length
            if kcv_length not in (0, 3) or len(kcv) != kcv_length:
                raise CardStatus(0x6A80, "KCV length")
            key = _decrypt_key(session, key_type, value)
            keys[key_id] = key
            check = KeySet(new_kvn, key_type, {key_id: key}, 0).kcv(key_id)
            if kcv and kcv != check:
                raise CardStatus(0x6A80, "KCV does not match the key")
            key_id += 1
            if not multiple:
                break
        if offset != len(data) or not keys:
            raise CardStatus(0x6A80, "trailing or missing key data")
        return _store_keys(card, command.p1, new_kvn, expected_type, keys)
    except CardStatus:
        for key in keys.values():
            key[:] = bytes(len(key))
        raise


def _read_length(data: bytes, offset: int) -> tuple[int, int]:
    if offset >= len(data):
        raise CardStatus(0x6A80, "missing length")
    if data[offset] == 0x81 and offset + 1 < len(data):
        return data[offset + 1], offset + 2
    if data[offset] & 0x80:
        raise CardStatus(0x6A80, "key block too long")
    return data[offset], offset + 1


def _decrypt_key(session, key_type: int, value: bytes) -> bytearray:
    try:
        if key_type == KEY_TYPE_AES:
            # Amendment D 7.2.2: 88 <len> <clear key length> <key encrypted with the DEK, zero ICV>
            if not value or value[0] not in (16, 24, 32) or len(value) - 1 < value[0]:
                raise CardStatus(0x6A80, "AES key length")
            plain = session.decrypt_key(value[1:])
            key = bytearray(plain[:value[0]])
            plain[:] = bytes(len(plain))
            return key
        if len(value) != 16:
            raise CardStatus(0x6A80, "SCP02 keys are 16-byte 3DES keys")
        return session.decrypt_key(value)
    except SecureMessagingError as exc:
        raise CardStatus(0x6A80, str(exc)) from None


def _store_keys(card: JCOP4Card, p1: int, new_kvn: int, key_type: int, keys: dict[int, bytearray]
                ) -> tuple[bytes, int]:
    old = None
    if p1 == 0:
        if new_kvn in card.key_sets:
            raise CardStatus(0x6A80, "KVN already present; replace it with P1 = KVN")
        if set(keys) != {1, 2, 3}:
            raise CardStatus(0x6A80, "a new key set needs ENC, MAC and DEK")
    else:
        old = card.key_sets.get(p1)
        if old is None:
            raise CardStatus(0x6A88, "no key set to replace")
        if old.key_type != key_type:
            raise CardStatus(0x6A80, "replacement keys of another type")
        if new_kvn != p1 and new_kvn in card.key_sets:
            raise CardStatus(0x6A80, "KVN already present")
    merged = {} if old is None else {key_id: bytearray(key) for key_id, key in old.keys.items()}
    merged.update(keys)
    scp_i = card.scp03_i if key_type == KEY_TYPE_AES else card.scp02_i
    new_set = KeySet(new_kvn, key_type, merged, old.scp_i if old else scp_i)
    growth = new_set.allocation() - (old.allocation() if old else 0)
    if growth > card.free_memory():
        new_set.wipe()
        raise CardStatus(0x6A84, "not enough memory for the key set")
    if card.faults.tear_next_write:
        # JCOP writes a key set inside a Java Card transaction: a tear rolls back to the old keys.
        card.faults.tear_next_write = False
        card.faults.log.append(f"tore PUT KEY of KVN {new_kvn:02X}: old keys kept")
        new_set.wipe()
        raise CardRemoved(card.apdu_count - 1)
    if old is not None:
        del card.key_sets[p1]
        old.wipe()
    card.key_sets[new_kvn] = new_set
    kcvs = b"".join(new_set.kcv(key_id) for key_id in sorted(keys))
    return bytes((new_kvn,)) + kcvs, 0x9000


# -- DELETE --------------------------------------------------------------------------------------
def delete(card: JCOP4Card, command: Command) -> tuple[bytes, int]:
    fields = parse_tlvs(command.data)
    tags = {tag: value for tag, value in fields}
    if 0x4F in tags:
        return _delete_content(card, tags[0x4F], related=bool(command.p2 & 0x80))
    if 0xD2 in tags and len(tags[0xD2]) == 1:
        key_id = tags[0xD0][0] if 0xD0 in tags and len(tags[0xD0]) == 1 else None
        return _delete_key(card, tags[0xD2][0], key_id)
    raise CardStatus(0x6A80, "DELETE needs 4F (AID) or D2 (KVN)")


def _delete_content(card: JCOP4Card, aid: bytes, *, related: bool) -> tuple[bytes, int]:
    # Seed 000: the system package and the ISD are part of the OS; the card refuses, as GP's
    # "conditions of use not satisfied" (a load file in use, an application that may not go).
    if aid in SYSTEM_AIDS or aid == card.isd_aid:
        raise CardStatus(0x6985, "system content cannot be deleted")
    if aid in card.apps:
        del card.apps[aid]
        return b"\x00", 0x9000
    load_file = card.load_files.get(aid)
    if load_file is None:
        raise CardStatus(0x6A88, "no such AID")
    if load_file.system:
        raise CardStatus(0x6985, "system content cannot be deleted")
    instances = [app for app in card.apps.values() if app.load_file_aid == aid]
    if instances and not related:
        raise CardStatus(0x6985, "load file has instances; delete them or use P2 80")
    for app in instances:
        del card.apps[app.aid]
    del card.load_files[aid]
    return b"\x00", 0x9000


def _delete_key(card: JCOP4Card, kvn: int, key_id: int | None) -> tuple[bytes, int]:
    key_set = card.key_sets.get(kvn)
    if key_set is None or (key_id is not None and key_id not in key_set.keys):
        raise CardStatus(0x6A88, "no such key")
    remaining = [ks for ks in card.key_sets.values() if ks.complete and ks is not key_set]
    if not remaining:
        raise CardStatus(0x6985, "the last key set cannot be deleted: no channel could open again")
    if key_id is None:
        key_set.wipe()
        del card.key_sets[kvn]
    else:
        key = key_set.keys.pop(key_id)
        key[:] = bytes(len(key))
        if not key_set.keys:
            del card.key_sets[kvn]
    return b"\x00", 0x9000


# -- STORE DATA ----------------------------------------------------------------------------------
def store_data(card: JCOP4Card, command: Command) -> tuple[bytes, int]:
    """Blocks numbered by P2 from 0, P1 b8 on the last; DGI (P1 b4) or BER-TLV (P1 b5) structure."""
    if command.p2 != card.store_next_block or (command.p2 and card.store_buffer is None):
        card.store_buffer = None
        raise CardStatus(0x6A86, f"STORE DATA block {command.p2}, expected {card.store_next_block}")
    if command.p2 == 0:
        card.store_buffer = bytearray()
    card.store_buffer += command.data
    card.store_next_block = command.p2 + 1
    if not command.p1 & 0x80:
        return b"", 0x9000
    data, card.store_buffer, card.store_next_block = bytes(card.store_buffer), None, 0
    structure = command.p1 & 0x18
    if structure == 0x08:
        items, target = _parse_dgis(data), card.dgis
    elif structure == 0x10:
        items, target = parse_tlvs(data), card.tlvs
    else:
        raise CardStatus(0x6A86, "STORE DATA structure must be DGI or BER-TLV")
    growth = sum(len(v) + DGI_OVERHEAD - (len(target[t]) + DGI_OVERHEAD if t in target else 0)
                 for t, v in items)
    if growth > card.free_memory():
        raise CardStatus(0x6A84, "not enough memory")
    if card.faults.tear_next_write:
        # each DGI is written atomically; the field drops after half of them
        card.faults.tear_next_write = False
        half = len(items) // 2
        for tag, value in items[:half]:
            target[tag] = value
        card.faults.log.append(f"tore STORE DATA after {half} of {len(items)} data objects")
        raise CardRemoved(card.apdu_count - 1)
    for tag, value in items:
        target[tag] = value
    return b"", 0x9000


def _parse_dgis(data: bytes) -> list[tuple[int, bytes]]:
    out, offset = [], 0
    while offset < len(data):
        if offset + 3 > len(data):
            raise CardStatus(0x6A80, "truncated DGI header")
        tag, length = int.from_bytes(data[offset:offset + 2], "big"), data[offset + 2]
        offset += 3
        if length == 0xFF:
            if offset + 2 > len(data):
                raise CardStatus(0x6A80, "truncated DGI length")
            length = int.from_bytes(data[offset:offset + 2], "big")
            offset += 2
        if offset + length > len(data):
            raise CardStatus(0x6A80, "DGI value runs past the data")
        out.append((tag, data[offset:offset + length]))
        offset += length
    return out


# -- SET STATUS ----------------------------------------------------------------------------------
# GP 2.3 5.1: forward through OP_READY -> INITIALIZED -> SECURED, SECURED <-> CARD_LOCKED,
# anything -> TERMINATED
CARD_TRANSITIONS = {
    OP_READY: {INITIALIZED, SECURED, TERMINATED},
    INITIALIZED: {SECURED, TERMINATED},
    SECURED: {CARD_LOCKED, TERMINATED},
    CARD_LOCKED: {SECURED, TERMINATED},
}


def is_unlock_or_terminate(command: Command) -> bool:
    """What a CARD_LOCKED card still accepts from its ISD besides GET DATA (GP 2.3 5.1.1.4).

    A locked card changes no keys and loads or installs nothing (as also summarised in the
    accepted answer to stackoverflow.com/q/24000608); its ISD can only move it back to SECURED
    or on to TERMINATED, after authenticating.
    """
    return command.ins == 0xF0 and command.p1 == 0x80 and command.p2 in (SECURED, TERMINATED)


def set_status(card: JCOP4Card, command: Command) -> tuple[bytes, int]:
    if command.p1 == 0x80:
        if command.p2 not in (INITIALIZED, SECURED, CARD_LOCKED, TERMINATED):
            raise CardStatus(0x6A86, "not a card life cycle state")
        if command.p2 not in CARD_TRANSITIONS.get(card.life_cycle, set()):
            raise CardStatus(0x6985, f"card life cycle {card.life_cycle:02X} -> {command.p2:02X} not allowed")
        card.life_cycle = command.p2
        return b"", 0x9000
    if command.p1 == 0x40:
        app = card.apps.get(command.data)
        if app is None:
            raise CardStatus(0x6A88, "no such application")
        state = command.p2
        if state & 0x80:
            app.life_cycle |= 0x80  # lock
        elif state & 0x07 == 0x07 and state >= app.life_cycle & 0x7F:
            app.life_cycle = state  # application-specific states only move forward; this also unlocks
        else:
            raise CardStatus(0x6985, "application life cycle transition not allowed")
        return b"", 0x9000
    raise CardStatus(0x6A86, "SET STATUS of the card (80) or an application (40)")


# -- INSTALL / LOAD ------------------------------------------------------------------------------
def _system_parameters(params: bytes) -> dict[int, int]:
    """Values of the system-specific parameters (EF: C6 load file size, C7 NVM quota, C8 volatile)."""
    out: dict[int, int] = {}
    for tag, value in parse_tlvs(params):
        if tag == 0xEF:
            for inner, number in parse_tlvs(value):
                out[inner] = int.from_bytes(number, "big")
    return out


def install(card: JCOP4Card, command: Command) -> tuple[bytes, int]:
    if command.p1 == 0x02:
        lf_aid, sd_aid, _hash, params, _token = _lv_fields(command.data, 5)
        if not 5 <= len(lf_aid) <= 16:
            raise CardStatus(0x6A80, "load file AID")
        if lf_aid in card.load_files or lf_aid in card.apps or lf_aid == card.isd_aid:
            raise CardStatus(0x6A80, "load file AID already present")
        if sd_aid and sd_aid != card.isd_aid:
            raise CardStatus(0x6A88, "no such security domain")
        if _system_parameters(params).get(0xC6, 0) > card.free_memory():
            raise CardStatus(0x6A84, "not enough memory for the load file")
        card.pending_load = {"aid": lf_aid, "next": 0, "data": bytearray()}
        return b"\x00", 0x9000
    if command.p1 in (0x04, 0x0C):
        lf_aid, module_aid, app_aid, privileges, params, _token = _lv_fields(command.data, 6)
        load_file = card.load_files.get(lf_aid)
        if load_file is None or module_aid not in load_file.modules:
            raise CardStatus(0x6A88, "no such load file or module")
        taken = app_aid in card.apps or app_aid in card.load_files or app_aid in SYSTEM_AIDS
        if not 5 <= len(app_aid) <= 16 or taken:
            raise CardStatus(0x6A80, "application AID invalid or already present")
        size = _system_parameters(params).get(0xC7) or APP_INSTANCE_NVM
        if size > card.free_memory():
            raise CardStatus(0x6A84, "not enough memory for the instance")
        life = APP_SELECTABLE if command.p1 & 0x08 else APP_INSTALLED
        card.apps[app_aid] = Application(app_aid, lf_aid, module_aid, life, (privileges + bytes(3))[:3], size)
        return b"\x00", 0x9000
    if command.p1 == 0x08:
        _, _, app_aid, *_ = _lv_fields(command.data, 6)
        app = card.apps.get(app_aid)
        if app is None or app.life_cycle != APP_INSTALLED:
            raise CardStatus(0x6A88, "no installed application to make selectable")
        app.life_cycle = APP_SELECTABLE
        return b"\x00", 0x9000
    raise CardStatus(0x6A86, "INSTALL for load (02), install (04/0C) or make selectable (08)")


def load(card: JCOP4Card, command: Command) -> tuple[bytes, int]:
    pending = card.pending_load
    if pending is None:
        raise CardStatus(0x6985, "LOAD without INSTALL [for load]")
    if command.p2 != pending["next"]:
        card.pending_load = None
        raise CardStatus(0x6A86, f"LOAD block {command.p2}, expected {pending['next']}")
    pending["data"] += command.data
    pending["next"] += 1
    if len(pending["data"]) > card.free_memory():
        card.pending_load = None
        raise CardStatus(0x6A84, "not enough memory for the load file")
    if not command.p1 & 0x80:
        return b"\x00", 0x9000
    card.pending_load = None
    items = parse_tlvs(bytes(pending["data"]))
    if len(items) != 1 or items[0][0] != 0xC4:
        raise CardStatus(0x6A80, "load file data is one C4 TLV")
    body = items[0][1]
    package_aid, version, applets = parse_cap(body)
    if package_aid is not None and package_aid != pending["aid"]:
        raise CardStatus(0x6A80, "CAP package AID differs from the load file AID")
    card.load_files[pending["aid"]] = LoadFile(pending["aid"], applets, version, len(body))
    return b"\x00", 0x9000


def parse_cap(body: bytes) -> tuple[bytes | None, bytes, list[bytes]]:
    """Package AID, version and applet AIDs from a CAP file's Header (1) and Applet (3) components.

    Java Card VM spec 6.4 / 6.5; anything unreadable is kept as an opaque load file with no modules.
    """
    package_aid, version, applets, offset = None, b"\x01\x00", [], 0
    try:
        while offset + 3 <= len(body):
            tag, size = body[offset], int.from_bytes(body[offset + 1:offset + 3], "big")
            info = body[offset + 3:offset + 3 + size]
            offset += 3 + size
            if tag == 1 and info[:4] == b"\xde\xca\xff\xed":
                version = bytes((info[8], info[7]))  # package major, minor
                package_aid = bytes(info[10:10 + info[9]])
            elif tag == 3:
                position = 1
                for _ in range(info[0]):
                    length = info[position]
                    applets.append(bytes(info[position + 1:position + 1 + length]))
                    position += 1 + length + 2
    except IndexError:
        return None, b"\x01\x00", []
    return package_aid, version, applets


HANDLERS = {
    0xCA: get_data,
    0xF2: get_status,
    0xD8: put_key,
    0xE4: delete,
    0xE2: store_data,
    0xF0: set_status,
    0xE6: install,
    0xE8: load,
}
