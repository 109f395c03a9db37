"""The host side of a MIFARE DESFire EV1/EV2/EV3 card: authentication, PICC, application and key commands.

`DESFire(transport)` talks to one card through anything with
`transmit(bytes) -> bytes`. Authentication (`auth.py`) and file and value
commands (`files.py`) are mixed in here.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import ProtocolUsageError, ShortResponseError
from .auth import AuthCommands
from .channel import DEFAULT_FRAME_SIZE, SecureChannel, command_name
from .constants import PICC_AID, AuthMode, Cmd, CommMode, KeyType
from .crypto import crc32, wipe
from .files import FileCommands

UID_LENGTH = 7  # GetCardUID: the 7-byte UID of DESFire EV1/EV2/EV3 (MF3ICD81 datasheet, GetCardUID)


@dataclass(frozen=True)
class Version:
    """GetVersion answer: hardware and software parts plus the production data."""

    hardware: bytes
    software: bytes
    uid: bytes
    batch: bytes
    production_week: int
    production_year: int

    @property
    def storage_size(self) -> int:
        # Byte 5: 2^(n>>1), "+" when bit 0 is set (between that and the next power).
        return 1 << (self.hardware[5] >> 1)


@dataclass(frozen=True)
class KeySettingsInfo:
    settings: int
    max_keys: int
    key_type: KeyType


class DESFire(AuthCommands, FileCommands):
    """One DESFire card behind a transport. Keys are held in bytearrays and wiped."""

    def __init__(self, transport, *, frame_size: int = DEFAULT_FRAME_SIZE,
                 random_bytes: Callable[[int], bytes] = os.urandom) -> None:
        self._channel = SecureChannel(transport, frame_size=frame_size)
        self._random = random_bytes
        self._auth_failed = False
        self.aid = PICC_AID

    def __repr__(self) -> str:
        s = self._channel.session
        return (f"DESFire(aid={self.aid.hex().upper()}, auth={s.mode.name}, key_no={s.key_no}, "
                f"keys=<hidden>)")

    # ---------------------------------------------------------------- state
    @property
    def auth_mode(self) -> AuthMode:
        return self._channel.session.mode

    @property
    def authenticated_key_no(self) -> int | None:
        return self._channel.session.key_no

    def close(self) -> None:
        """Wipe session keys; the object can still send plain commands."""
        self._channel.reset()

    def __enter__(self) -> DESFire:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _mgmt(self) -> CommMode:
        # EV2 protects card management commands with a MAC; EV1 MACs every exchange anyway.
        return CommMode.MAC if self.auth_mode == AuthMode.EV2 else CommMode.PLAIN

    def _cmd(self, code: Cmd, header: bytes = b"", data: bytes = b"", **kw) -> bytes:
        return self._channel.command(code, header, data, **kw)

    # ------------------------------------------------------ PICC commands
    def get_version(self) -> Version:
        raw = self._cmd(Cmd.GET_VERSION, tx=self._mgmt(), rx=self._mgmt())
        if len(raw) < 28:
            raise ShortResponseError(f"DESFire GetVersion: {len(raw)} bytes, expected 28",
                                     command="DESFire GetVersion", sw=0x9100)
        return Version(raw[0:7], raw[7:14], raw[14:21], raw[21:26], raw[26], raw[27])

    def get_card_uid(self) -> bytes:
        """The real 7-byte UID (needs an authentication; the answer is encrypted). The length is given:
        EV1 FULL mode pads UID || CRC32 with zeros, and searching for where the CRC verifies also finds a
        longer match for about 1 UID in 235."""
        return self._cmd(Cmd.GET_CARD_UID, tx=CommMode.FULL if self.auth_mode == AuthMode.EV2 else
                         CommMode.PLAIN, rx=CommMode.FULL, rx_length=UID_LENGTH)

    def free_memory(self) -> int:
        raw = self._cmd(Cmd.FREE_MEMORY, tx=self._mgmt(), rx=self._mgmt())
        if len(raw) != 3:
            raise ShortResponseError(f"DESFire FreeMemory: {len(raw)} bytes, expected 3",
                                     command="DESFire FreeMemory", sw=0x9100)
        return int.from_bytes(raw, "little")

    def format_picc(self) -> None:
        self._cmd(Cmd.FORMAT_PICC, tx=self._mgmt(), rx=self._mgmt())

    def get_application_ids(self) -> list[bytes]:
        raw = self._cmd(Cmd.GET_APPLICATION_IDS, tx=self._mgmt(), rx=self._mgmt())
        if len(raw) % 3:
            raise ShortResponseError(f"DESFire GetApplicationIDs: {len(raw)} bytes is not a list of AIDs",
                                     command="DESFire GetApplicationIDs", sw=0x9100)
        return [raw[i:i + 3] for i in range(0, len(raw), 3)]

    def select_application(self, aid: bytes) -> None:
        """Select an application (AID as the 3 bytes on the wire, LSB first). Ends any authentication."""
        aid = _check_aid(aid)
        self._channel.reset()
        self._cmd(Cmd.SELECT_APPLICATION, aid)
        self.aid = aid

    def create_application(self, aid: bytes, key_settings: int, num_keys: int,
                           key_type: KeyType = KeyType.AES) -> None:
        aid = _check_aid(aid)
        if not 1 <= num_keys <= 14:
            raise ProtocolUsageError("an application has 1..14 keys", command="DESFire CreateApplication")
        self._cmd(Cmd.CREATE_APPLICATION, aid + bytes((key_settings & 0xFF, num_keys | key_type)),
                  tx=self._mgmt(), rx=self._mgmt())

    def delete_application(self, aid: bytes) -> None:
        aid = _check_aid(aid)
        self._cmd(Cmd.DELETE_APPLICATION, aid, tx=self._mgmt(), rx=self._mgmt())
        if aid == self.aid:
            self._channel.reset()

    # ------------------------------------------------------- key commands
    def get_key_settings(self) -> KeySettingsInfo:
        raw = self._cmd(Cmd.GET_KEY_SETTINGS, tx=self._mgmt(), rx=self._mgmt())
        if len(raw) != 2:
            raise ShortResponseError(f"DESFire GetKeySettings: {len(raw)} bytes, expected 2",
                                     command="DESFire GetKeySettings", sw=0x9100)
        try:
            key_type = KeyType(raw[1] & 0xC0)
        except ValueError:
            key_type = KeyType.DES
        return KeySettingsInfo(raw[0], raw[1] & 0x0F, key_type)

    def change_key_settings(self, key_settings: int) -> None:
        self._require_auth("DESFire ChangeKeySettings")
        self._cmd(Cmd.CHANGE_KEY_SETTINGS, b"", bytes((key_settings & 0xFF,)), tx=CommMode.FULL,
                  rx=self._mgmt())

    def get_key_version(self, key_no: int) -> int:
        raw = self._cmd(Cmd.GET_KEY_VERSION, bytes((key_no & 0xFF,)), tx=self._mgmt(), rx=self._mgmt())
        if len(raw) != 1:
            raise ShortResponseError(f"DESFire GetKeyVersion: {len(raw)} bytes, expected 1",
                                     command="DESFire GetKeyVersion", sw=0x9100)
        return raw[0]

    def change_key(self, key_no: int, new_key: bytearray, new_version: int,
                   old_key: bytearray | None = None, key_type: KeyType | None = None) -> None:
        """ChangeKey (0xC4). `old_key` is needed when changing a key other than the one in use.

        `key_type` defaults to the type of the authenticated key; on the PICC
        level its bits are sent with the key number (the PICC master key may
        change type).
        """
        name = command_name(Cmd.CHANGE_KEY)
        self._require_auth(name)
        s = self._channel.session
        key_type = s.key_type if key_type is None else key_type
        if len(new_key) != key_type.key_length and not (key_type == KeyType.DES and len(new_key) == 8):
            raise ProtocolUsageError(f"{name}: a {key_type.name} key is {key_type.key_length} bytes",
                                     command=name)
        if len(new_key) == 8:
            new_key = bytearray(bytes(new_key) * 2)
        same_key = key_no == s.key_no
        if not same_key and (old_key is None or len(old_key) != len(new_key)):
            raise ProtocolUsageError(f"{name}: changing another key than the authenticated one needs "
                                     "the old key of the same length", command=name)
        header = bytes((key_no | (key_type if self.aid == PICC_AID else 0),))
        key = bytearray(new_key)
        body = bytearray()
        suffix = b""
        try:
            ev2 = s.mode == AuthMode.EV2
            if key_type != KeyType.AES and not ev2:
                _set_des_version(key, new_version)  # EV1 DES keys carry their version in parity bits
            key_crc = crc32(bytes(key))
            if not same_key:
                for i in range(len(key)):
                    body.append(key[i] ^ old_key[i])
            else:
                body += key
            if key_type == KeyType.AES or ev2:
                body.append(new_version & 0xFF)
            if not same_key:
                if ev2:
                    body += key_crc
                else:
                    suffix = key_crc
            self._cmd(Cmd.CHANGE_KEY, header, bytes(body), tx=CommMode.FULL, rx=self._mgmt(),
                      suffix=suffix, ends_session=same_key)
        finally:
            wipe(key)
            wipe(body)

    def _require_auth(self, name: str) -> None:
        if not self._channel.authenticated:
            raise ProtocolUsageError(f"{name}: needs an authentication (EV1 ISO/AES or EV2)", command=name)


def _check_aid(aid: bytes) -> bytes:
    if len(aid) != 3:
        raise ProtocolUsageError("an AID is 3 bytes", command="DESFire")
    return bytes(aid)


def _set_des_version(key: bytearray, version: int) -> None:
    """Key version into the parity bits of the first 8 bytes, most significant bit first."""
    for i in range(8):
        key[i] = (key[i] & 0xFE) | ((version >> (7 - i)) & 0x01)
