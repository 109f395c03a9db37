"""DESFire file commands: create, settings, data, value and record files, transactions.

A mixin of `DESFire` (session.py); it relies on `_cmd`, `_mgmt` and `auth_mode`.
Offsets, lengths and sizes are 3 bytes little-endian, values 4 bytes signed
little-endian, as in the DESFire data sheets.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import MalformedResponseError, ProtocolUsageError, ShortResponseError
from .constants import AccessRights, AuthMode, Cmd, CommMode, FileType


def _u24(value: int, what: str) -> bytes:
    if not 0 <= value <= 0xFFFFFF:
        raise ProtocolUsageError(f"{what} {value} does not fit 3 bytes", command="DESFire")
    return value.to_bytes(3, "little")


def _i32(value: int, what: str) -> bytes:
    if not -(1 << 31) <= value < (1 << 31):
        raise ProtocolUsageError(f"{what} {value} does not fit a signed 32-bit value", command="DESFire")
    return value.to_bytes(4, "little", signed=True)


def _file_no(file_no: int) -> bytes:
    if not 0 <= file_no <= 0x1F:
        raise ProtocolUsageError(f"file number {file_no} out of range 0..31", command="DESFire")
    return bytes((file_no,))


@dataclass(frozen=True)
class FileSettings:
    file_type: FileType
    comm_mode: CommMode
    access: AccessRights
    size: int | None = None  # data files
    lower_limit: int | None = None  # value files
    upper_limit: int | None = None
    limited_credit_value: int | None = None
    limited_credit_enabled: bool | None = None
    record_size: int | None = None  # record files
    max_records: int | None = None
    current_records: int | None = None

    @classmethod
    def parse(cls, raw: bytes) -> FileSettings:
        name = "DESFire GetFileSettings"
        if len(raw) < 4:
            raise ShortResponseError(f"{name}: {len(raw)} bytes", command=name, sw=0x9100)
        try:
            file_type = FileType(raw[0])
        except ValueError:
            raise MalformedResponseError(f"{name}: unknown file type {raw[0]:02X}", command=name,
                                         sw=0x9100) from None
        comm = CommMode(raw[1] & 0x03) if raw[1] & 0x03 != 2 else CommMode.PLAIN
        access = AccessRights.from_bytes(raw[2:4])
        rest = raw[4:]
        need = {FileType.STANDARD_DATA: 3, FileType.BACKUP_DATA: 3, FileType.VALUE: 13,
                FileType.LINEAR_RECORD: 9, FileType.CYCLIC_RECORD: 9}[file_type]
        if len(rest) < need:
            raise ShortResponseError(f"{name}: {len(raw)} bytes too short for a {file_type.name} file",
                                     command=name, sw=0x9100)
        if file_type in (FileType.STANDARD_DATA, FileType.BACKUP_DATA):
            return cls(file_type, comm, access, size=int.from_bytes(rest[0:3], "little"))
        if file_type == FileType.VALUE:
            return cls(file_type, comm, access,
                       lower_limit=int.from_bytes(rest[0:4], "little", signed=True),
                       upper_limit=int.from_bytes(rest[4:8], "little", signed=True),
                       limited_credit_value=int.from_bytes(rest[8:12], "little", signed=True),
                       limited_credit_enabled=bool(rest[12] & 0x01))
        return cls(file_type, comm, access, record_size=int.from_bytes(rest[0:3], "little"),
                   max_records=int.from_bytes(rest[3:6], "little"),
                   current_records=int.from_bytes(rest[6:9], "little"))


class FileCommands:
    # ------------------------------------------------------------ listing
    def get_file_ids(self) -> list[int]:
        return list(self._cmd(Cmd.GET_FILE_IDS, tx=self._mgmt(), rx=self._mgmt()))

    def get_file_settings(self, file_no: int) -> FileSettings:
        return FileSettings.parse(self._cmd(Cmd.GET_FILE_SETTINGS, _file_no(file_no), tx=self._mgmt(),
                                            rx=self._mgmt()))

    def change_file_settings(self, file_no: int, comm_mode: CommMode, access_rights: AccessRights,
                             *, plain: bool = False) -> None:
        """ChangeFileSettings; encrypted unless `plain` (when the file's Change right is free, 0xE).

        A free Change right runs the command in CommMode.Plain both ways, so an EV2
        session sends and expects no MAC (EV1 still chains and checks its CMAC).
        """
        mode_tx, mode_rx = (CommMode.PLAIN, CommMode.PLAIN) if plain else (CommMode.FULL, self._mgmt())
        self._cmd(Cmd.CHANGE_FILE_SETTINGS, _file_no(file_no), bytes((comm_mode,)) + access_rights.to_bytes(),
                  tx=mode_tx, rx=mode_rx)

    # ------------------------------------------------------------- create
    def _create(self, code: Cmd, file_no: int, comm_mode: CommMode, access: AccessRights,
                tail: bytes) -> None:
        self._cmd(code, _file_no(file_no) + bytes((CommMode(comm_mode),)) + access.to_bytes() + tail,
                  tx=self._mgmt(), rx=self._mgmt())

    def create_std_data_file(self, file_no: int, comm_mode: CommMode, access_rights: AccessRights,
                             size: int) -> None:
        self._create(Cmd.CREATE_STD_DATA_FILE, file_no, comm_mode, access_rights, _u24(size, "size"))

    def create_backup_data_file(self, file_no: int, comm_mode: CommMode, access_rights: AccessRights,
                                size: int) -> None:
        self._create(Cmd.CREATE_BACKUP_DATA_FILE, file_no, comm_mode, access_rights, _u24(size, "size"))

    def create_value_file(self, file_no: int, comm_mode: CommMode, access_rights: AccessRights, *,
                          lower_limit: int, upper_limit: int, value: int,
                          limited_credit: bool = False, free_get_value: bool = False) -> None:
        flags = (0x01 if limited_credit else 0) | (0x02 if free_get_value else 0)
        tail = (_i32(lower_limit, "lower limit") + _i32(upper_limit, "upper limit") + _i32(value, "value")
                + bytes((flags,)))
        self._create(Cmd.CREATE_VALUE_FILE, file_no, comm_mode, access_rights, tail)

    def create_linear_record_file(self, file_no: int, comm_mode: CommMode, access_rights: AccessRights,
                                  record_size: int, max_records: int) -> None:
        self._create(Cmd.CREATE_LINEAR_RECORD_FILE, file_no, comm_mode, access_rights,
                     _u24(record_size, "record size") + _u24(max_records, "max records"))

    def create_cyclic_record_file(self, file_no: int, comm_mode: CommMode, access_rights: AccessRights,
                                  record_size: int, max_records: int) -> None:
        self._create(Cmd.CREATE_CYCLIC_RECORD_FILE, file_no, comm_mode, access_rights,
                     _u24(record_size, "record size") + _u24(max_records, "max records"))

    def delete_file(self, file_no: int) -> None:
        self._cmd(Cmd.DELETE_FILE, _file_no(file_no), tx=self._mgmt(), rx=self._mgmt())

    # --------------------------------------------------------------- data
    def _write_rx(self, comm_mode: CommMode) -> CommMode:
        # EV2: a write in CommMode.Plain is answered by a bare 91 00 (AN12196 Table 24; the
        # CmdCtr still counts), in MAC and FULL by the MAC alone (AN12343 p. 54, AN12196
        # Table 21). EV1 appends its chained CMAC to every answer, whatever the mode.
        if self.auth_mode == AuthMode.EV2 and comm_mode == CommMode.PLAIN:
            return CommMode.PLAIN
        return self._mgmt()

    def _read_tx(self, comm_mode: CommMode) -> CommMode:
        # EV1 sends read commands plain (the CMAC is only tracked); EV2 MACs the command.
        if self.auth_mode == AuthMode.EV2:
            return CommMode.MAC if comm_mode != CommMode.PLAIN else CommMode.PLAIN
        return CommMode.PLAIN

    def read_data(self, file_no: int, offset: int = 0, length: int = 0,
                  comm_mode: CommMode = CommMode.PLAIN) -> bytes:
        """ReadData; length 0 reads to the end of the file. In an EV1 session's FULL mode the host finds the
        end of the data where its CRC verifies, which for about 1 content in 240 it does at two lengths:
        that read raises MalformedResponseError instead of guessing; give the length there."""
        header = _file_no(file_no) + _u24(offset, "offset") + _u24(length, "length")
        data = self._cmd(Cmd.READ_DATA, header, tx=self._read_tx(comm_mode), rx=comm_mode,
                         rx_length=length or None)
        if length and len(data) != length:
            raise ShortResponseError(f"DESFire ReadData: {len(data)} bytes, asked for {length}",
                                     command="DESFire ReadData", sw=0x9100)
        return data

    def write_data(self, file_no: int, offset: int, data: bytes,
                   comm_mode: CommMode = CommMode.PLAIN) -> None:
        header = _file_no(file_no) + _u24(offset, "offset") + _u24(len(data), "length")
        self._cmd(Cmd.WRITE_DATA, header, bytes(data), tx=comm_mode, rx=self._write_rx(comm_mode))

    def write_record(self, file_no: int, offset: int, data: bytes,
                     comm_mode: CommMode = CommMode.PLAIN) -> None:
        header = _file_no(file_no) + _u24(offset, "offset") + _u24(len(data), "length")
        self._cmd(Cmd.WRITE_RECORD, header, bytes(data), tx=comm_mode, rx=self._write_rx(comm_mode))

    def read_records(self, file_no: int, first: int = 0, count: int = 0,
                     comm_mode: CommMode = CommMode.PLAIN, record_size: int | None = None) -> bytes:
        """ReadRecords from record `first` (0 = newest); count 0 reads all. Returns the raw records."""
        header = _file_no(file_no) + _u24(first, "record") + _u24(count, "count")
        rx_length = count * record_size if count and record_size else None
        return self._cmd(Cmd.READ_RECORDS, header, tx=self._read_tx(comm_mode), rx=comm_mode,
                         rx_length=rx_length)

    def clear_record_file(self, file_no: int) -> None:
        self._cmd(Cmd.CLEAR_RECORD_FILE, _file_no(file_no), tx=self._mgmt(), rx=self._mgmt())

    # -------------------------------------------------------------- value
    def get_value(self, file_no: int, comm_mode: CommMode = CommMode.PLAIN) -> int:
        raw = self._cmd(Cmd.GET_VALUE, _file_no(file_no), tx=self._read_tx(comm_mode), rx=comm_mode,
                        rx_length=4)
        if len(raw) != 4:
            raise ShortResponseError(f"DESFire GetValue: {len(raw)} bytes, expected 4",
                                     command="DESFire GetValue", sw=0x9100)
        return int.from_bytes(raw, "little", signed=True)

    def _value_op(self, code: Cmd, file_no: int, value: int, comm_mode: CommMode) -> None:
        if value < 0:
            raise ProtocolUsageError("credit/debit amounts are not negative", command="DESFire")
        self._cmd(code, _file_no(file_no), _i32(value, "value"), tx=comm_mode, rx=self._write_rx(comm_mode))

    def credit(self, file_no: int, value: int, comm_mode: CommMode = CommMode.PLAIN) -> None:
        self._value_op(Cmd.CREDIT, file_no, value, comm_mode)

    def debit(self, file_no: int, value: int, comm_mode: CommMode = CommMode.PLAIN) -> None:
        self._value_op(Cmd.DEBIT, file_no, value, comm_mode)

    def limited_credit(self, file_no: int, value: int, comm_mode: CommMode = CommMode.PLAIN) -> None:
        self._value_op(Cmd.LIMITED_CREDIT, file_no, value, comm_mode)

    # -------------------------------------------------------- transactions
    def commit_transaction(self) -> None:
        self._cmd(Cmd.COMMIT_TRANSACTION, tx=self._mgmt(), rx=self._mgmt())

    def abort_transaction(self) -> None:
        self._cmd(Cmd.ABORT_TRANSACTION, tx=self._mgmt(), rx=self._mgmt())
