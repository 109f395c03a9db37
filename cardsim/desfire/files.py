"""File level commands: create/delete/settings, data, value and record files, transactions."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..base import CardRemoved
from .model import (
    BACKUP,
    CYCLIC_RECORD,
    FREE,
    FULL,
    KS_FREE_CREATE_DELETE,
    KS_FREE_DIRECTORY,
    LINEAR_RECORD,
    MACED,
    MAX_FILES,
    PLAIN,
    STANDARD,
    AccessRights,
    DataFile,
    RecordFile,
    ValueFile,
)
from .session import MGMT, DESFireStatus

if TYPE_CHECKING:
    from .card import DESFireCard

READ_DATA, WRITE_DATA, WRITE_RECORD, READ_RECORDS = (0xBD, 0xAD), (0x3D, 0x8D), (0x3B, 0x8B), (0xBB, 0xAB)


def _u24(raw: bytes) -> int:
    return int.from_bytes(raw[:3], "little")


def _comm(raw: int) -> int:
    return FULL if raw & 0x03 == FULL else (MACED if raw & 0x03 == MACED else PLAIN)


def _in_application(card: DESFireCard) -> None:
    if card.selected is card.picc:
        raise DESFireStatus(0x9D, "no application selected")


def _file(card: DESFireCard, file_no: int, kinds: tuple[type, ...]):
    _in_application(card)
    f = card.selected.files.get(file_no)
    if f is None:
        raise DESFireStatus(0xF0, "no such file")
    if not isinstance(f, kinds):
        raise DESFireStatus(0x9E, "command does not fit the file type")
    return f


def effective_comm(card: DESFireCard, f, rights: tuple[int, ...]) -> int | None:
    """The communication mode an access runs in, or None if the current authentication does not grant it.

    An access right set to free (0xE) means the access needs no key and runs plain,
    whatever the file's communication settings say.
    """
    if FREE in rights:
        return PLAIN
    key_no = card.authenticated_key()
    if key_no is not None and key_no in rights:
        return f.comm
    return None


def _grant(card: DESFireCard, f, rights: tuple[int, ...]) -> int:
    comm = effective_comm(card, f, rights)
    if comm is None:
        raise DESFireStatus(0xAE, "access right not granted by the current authentication")
    return comm


def _command_mode(comm: int) -> int:
    # A read command carries no data: EV2 MACs it unless the access is plain.
    return PLAIN if comm == PLAIN else MGMT


def expected_length(card: DESFireCard, ins: int, data: bytes) -> int | None:
    """Total length a chained WriteData/WriteRecord will have, so the card asks for more frames (0xAF)."""
    if ins not in WRITE_DATA + WRITE_RECORD or len(data) < 7 or card.selected is card.picc:
        return None
    f = card.selected.files.get(data[0])
    if f is None or isinstance(f, ValueFile):
        return None
    comm = effective_comm(card, f, (f.rights.write, f.rights.read_write))
    if comm is None:
        return None
    return 7 + card.channel.wire_length(_u24(data[4:7]), comm)


# -- creating, listing, changing and deleting files ----------------------------
def _may_manage(card: DESFireCard) -> None:
    _in_application(card)
    if not card.selected.key_settings & KS_FREE_CREATE_DELETE and card.authenticated_key() != 0:
        raise DESFireStatus(0xAE, "application master key required")


def create_file(card: DESFireCard, ins: int, data: bytes):
    data = card.channel.receive(ins, b"", data, MGMT)
    _may_manage(card)
    app = card.selected
    if not data:
        raise DESFireStatus(0x7E, "no file number")
    file_no, rest = data[0], data[1:]
    iso_fid = None
    if app.iso_enabled and ins != 0xCC:
        if len(rest) < 2:
            raise DESFireStatus(0x7E, "ISO file ID missing")
        iso_fid, rest = int.from_bytes(rest[:2], "little"), rest[2:]
    need = {0xCD: 6, 0xCB: 6, 0xCC: 16, 0xC1: 9, 0xC0: 9}[ins]
    if len(rest) != need:
        raise DESFireStatus(0x7E, "Create file length")
    if file_no >= MAX_FILES:
        raise DESFireStatus(0x9E, "file number")
    if file_no in app.files:
        raise DESFireStatus(0xDE, "file exists")
    comm, rights = _comm(rest[0]), AccessRights.from_bytes(rest[1:3])
    if ins in (0xCD, 0xCB):
        size = _u24(rest[3:6])
        if size == 0:
            raise DESFireStatus(0x9E, "file size")
        kind = STANDARD if ins == 0xCD else BACKUP
        f = DataFile(kind, comm, rights, size, bytearray(size), iso_fid=iso_fid)
    elif ins == 0xCC:
        lower, upper, value = (int.from_bytes(rest[i : i + 4], "little", signed=True) for i in (3, 7, 11))
        if not lower <= value <= upper:
            raise DESFireStatus(0x9E, "value outside its limits")
        flags = rest[15]
        f = ValueFile(comm, rights, lower, upper, value, bool(flags & 1), free_get_value=bool(flags & 2))
    else:
        record_size, max_records = _u24(rest[3:6]), _u24(rest[6:9])
        if record_size == 0 or max_records < (2 if ins == 0xC0 else 1):
            raise DESFireStatus(0x9E, "record file size")
        kind = LINEAR_RECORD if ins == 0xC1 else CYCLIC_RECORD
        f = RecordFile(kind, comm, rights, record_size, max_records, iso_fid=iso_fid)
    if f.allocation() > card.free_memory():
        raise DESFireStatus(0x0E, "out of EEPROM")
    app.files[file_no] = f
    return card.channel.send(b"", MGMT)


def delete_file(card: DESFireCard, ins: int, data: bytes):
    data = card.channel.receive(ins, b"", data, MGMT)
    _may_manage(card)
    if len(data) != 1:
        raise DESFireStatus(0x7E, "DeleteFile length")
    if card.selected.files.pop(data[0], None) is None:
        raise DESFireStatus(0xF0, "no such file")
    return card.channel.send(b"", MGMT)


def _may_list(card: DESFireCard) -> None:
    _in_application(card)
    if not card.selected.key_settings & KS_FREE_DIRECTORY and card.authenticated_key() != 0:
        raise DESFireStatus(0xAE, "application master key required")


def get_file_ids(card: DESFireCard, ins: int, data: bytes):
    card.channel.receive(ins, b"", data, MGMT)
    _may_list(card)
    return card.channel.send(bytes(sorted(card.selected.files)), MGMT)


def get_file_settings(card: DESFireCard, ins: int, data: bytes):
    data = card.channel.receive(ins, b"", data, MGMT)
    _may_list(card)
    if len(data) != 1:
        raise DESFireStatus(0x7E, "GetFileSettings length")
    f = _file(card, data[0], (DataFile, ValueFile, RecordFile))
    answer = bytes((f.file_type, f.comm)) + f.rights.to_bytes() + f.size_fields()
    return card.channel.send(answer, MGMT)


def change_file_settings(card: DESFireCard, ins: int, data: bytes):
    if not data:
        raise DESFireStatus(0x7E, "no file number")
    f = _file(card, data[0], (DataFile, ValueFile, RecordFile))
    change = f.rights.change
    if change == 0xF:
        raise DESFireStatus(0x9D, "file settings are frozen")
    if change == FREE:
        settings = card.channel.receive(ins, bytes(data[:1]), bytes(data[1:]), PLAIN)
        mode = PLAIN
    else:
        if card.authenticated_key() != change:
            raise DESFireStatus(0xAE, "change access right not granted")
        settings = card.channel.receive(ins, bytes(data[:1]), bytes(data[1:]), FULL, plain_len=3)
        mode = FULL
    if len(settings) != 3:
        raise DESFireStatus(0x7E, "ChangeFileSettings length")
    f.comm, f.rights = _comm(settings[0]), AccessRights.from_bytes(settings[1:3])
    return card.channel.send(b"", mode)


# -- data files --------------------------------------------------------------------
def read_data(card: DESFireCard, ins: int, data: bytes):
    f = _file(card, data[0] if data else -1, (DataFile,))
    comm = _grant(card, f, (f.rights.read, f.rights.read_write))
    data = card.channel.receive(ins, b"", data, _command_mode(comm))
    if len(data) != 7:
        raise DESFireStatus(0x7E, "ReadData length")
    offset, length = _u24(data[1:4]), _u24(data[4:7])
    if length == 0:
        length = f.size - offset
    if offset + length > f.size or length < 0:
        raise DESFireStatus(0xBE, "outside the file")
    return card.channel.send(bytes(f.data[offset : offset + length]), comm)


def write_data(card: DESFireCard, ins: int, data: bytes):
    f = _file(card, data[0] if data else -1, (DataFile,))
    comm = _grant(card, f, (f.rights.write, f.rights.read_write))
    if len(data) < 7:
        raise DESFireStatus(0x7E, "WriteData length")
    offset, length = _u24(data[1:4]), _u24(data[4:7])
    payload = card.channel.receive(ins, bytes(data[:7]), bytes(data[7:]), comm, plain_len=length)
    if len(payload) != length:
        raise DESFireStatus(0x7E, "data length does not match the header")
    if offset + length > f.size:
        raise DESFireStatus(0xBE, "outside the file")
    if f.file_type == BACKUP:
        if f.pending is None:
            f.pending = bytearray(f.data)
        target = f.pending
    else:
        target = f.data
    if card.faults.tear_next_write:
        # The field drops half-way through programming the EEPROM.
        card.faults.tear_next_write = False
        half = length // 2
        target[offset : offset + half] = payload[:half]
        card.faults.log.append(f"tore write to file {data[0]} after {half} of {length} bytes")
        raise CardRemoved(card.apdu_count - 1)
    target[offset : offset + length] = payload
    return card.channel.send(b"", comm)


# -- value files ---------------------------------------------------------------------
def get_value(card: DESFireCard, ins: int, data: bytes):
    f = _file(card, data[0] if data else -1, (ValueFile,))
    rights = (f.rights.read, f.rights.write, f.rights.read_write)
    comm = PLAIN if f.free_get_value else _grant(card, f, rights)
    data = card.channel.receive(ins, b"", data, _command_mode(comm))
    if len(data) != 1:
        raise DESFireStatus(0x7E, "GetValue length")
    return card.channel.send(f.value.to_bytes(4, "little", signed=True), comm)


def change_value(card: DESFireCard, ins: int, data: bytes):
    f = _file(card, data[0] if data else -1, (ValueFile,))
    rights = {0x0C: (f.rights.read_write,),
              0xDC: (f.rights.read, f.rights.write, f.rights.read_write),
              0x1C: (f.rights.write, f.rights.read_write)}[ins]
    comm = _grant(card, f, rights)
    raw = card.channel.receive(ins, bytes(data[:1]), bytes(data[1:]), comm, plain_len=4)
    if len(raw) != 4:
        raise DESFireStatus(0x7E, "value length")
    amount = int.from_bytes(raw, "little", signed=True)
    if amount < 0:
        raise DESFireStatus(0x9E, "negative amount")
    current = f.current()
    if ins == 0x0C:
        new = current + amount
    elif ins == 0xDC:
        new = current - amount
        f.pending_limited = (f.pending_limited or 0) + amount
    else:
        if not f.limited_credit_enabled:
            raise DESFireStatus(0x9D, "limited credit disabled")
        if amount > f.limited_credit_value:
            raise DESFireStatus(0xBE, "more than the last debits")
        new = current + amount
        f.pending_limited = -1  # used: no further limited credit until the next debit
    if not f.lower <= new <= f.upper:
        raise DESFireStatus(0xBE, "value limit")
    f.pending = new
    return card.channel.send(b"", comm)


# -- record files ----------------------------------------------------------------------
def write_record(card: DESFireCard, ins: int, data: bytes):
    f = _file(card, data[0] if data else -1, (RecordFile,))
    comm = _grant(card, f, (f.rights.write, f.rights.read_write))
    if len(data) < 7:
        raise DESFireStatus(0x7E, "WriteRecord length")
    offset, length = _u24(data[1:4]), _u24(data[4:7])
    payload = card.channel.receive(ins, bytes(data[:7]), bytes(data[7:]), comm, plain_len=length)
    if len(payload) != length or length == 0:
        raise DESFireStatus(0x7E, "data length does not match the header")
    if offset + length > f.record_size:
        raise DESFireStatus(0xBE, "outside the record")
    if f.pending is None or not getattr(f, "open_record", False):
        records = list(f.current())
        capacity = f.max_records - (1 if f.file_type == CYCLIC_RECORD else 0)
        if f.file_type == LINEAR_RECORD and len(records) >= capacity:
            raise DESFireStatus(0xBE, "record file full")
        records.append(bytes(f.record_size))
        if len(records) > capacity:
            records.pop(0)
        f.pending = records
        f.open_record = True
    record = bytearray(f.pending[-1])
    record[offset : offset + length] = payload
    f.pending[-1] = bytes(record)
    return card.channel.send(b"", comm)


def read_records(card: DESFireCard, ins: int, data: bytes):
    f = _file(card, data[0] if data else -1, (RecordFile,))
    comm = _grant(card, f, (f.rights.read, f.rights.read_write))
    data = card.channel.receive(ins, b"", data, _command_mode(comm))
    if len(data) != 7:
        raise DESFireStatus(0x7E, "ReadRecords length")
    newest_offset, count = _u24(data[1:4]), _u24(data[4:7])
    available = len(f.records)
    if newest_offset >= available:
        raise DESFireStatus(0xBE, "no such record")
    if count == 0:
        count = available - newest_offset
    if newest_offset + count > available:
        raise DESFireStatus(0xBE, "not that many records")
    end = available - newest_offset
    chosen = f.records[end - count : end]  # chronological order, oldest first
    return card.channel.send(b"".join(chosen), comm)


def clear_record_file(card: DESFireCard, ins: int, data: bytes):
    data = card.channel.receive(ins, b"", data, MGMT)
    f = _file(card, data[0] if data else -1, (RecordFile,))
    _grant(card, f, (f.rights.read_write,))
    f.pending = []
    f.open_record = False
    return card.channel.send(b"", MGMT)


# -- transactions ------------------------------------------------------------------------
def commit_transaction(card: DESFireCard, ins: int, data: bytes):
    card.channel.receive(ins, b"", data, MGMT)
    _in_application(card)
    if card.faults.tear_next_write:
        # Torn before the card's atomic switch-over: nothing of the transaction is kept.
        card.faults.tear_next_write = False
        card.faults.log.append("tore CommitTransaction before the switch-over")
        raise CardRemoved(card.apdu_count - 1)
    for f in card.selected.files.values():
        if isinstance(f, DataFile) and f.pending is not None:
            f.data[:] = f.pending
        elif isinstance(f, ValueFile) and f.pending is not None:
            f.value = f.pending
            if f.pending_limited == -1:
                f.limited_credit_value = 0
            elif f.pending_limited:
                f.limited_credit_value = f.pending_limited
        elif isinstance(f, RecordFile) and f.pending is not None:
            f.records = list(f.pending)
            f.open_record = False
    card.selected.discard_pending()
    return card.channel.send(b"", MGMT)


def abort_transaction(card: DESFireCard, ins: int, data: bytes):
    card.channel.receive(ins, b"", data, MGMT)
    _in_application(card)
    card.selected.discard_pending()
    return card.channel.send(b"", MGMT)


HANDLERS = {
    0xCD: create_file, 0xCB: create_file, 0xCC: create_file, 0xC1: create_file, 0xC0: create_file,
    0xDF: delete_file, 0x6F: get_file_ids, 0xF5: get_file_settings, 0x5F: change_file_settings,
    0xBD: read_data, 0xAD: read_data, 0x3D: write_data, 0x8D: write_data,
    0x6C: get_value, 0x0C: change_value, 0xDC: change_value, 0x1C: change_value,
    0x3B: write_record, 0x8B: write_record, 0xBB: read_records, 0xAB: read_records, 0xEB: clear_record_file,
    0xC7: commit_transaction, 0xA7: abort_transaction,
}
