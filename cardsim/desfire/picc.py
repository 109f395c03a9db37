"""PICC and application level commands: version, UID, memory, applications, key settings and keys."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .crypto import AES, DES, KEY_LENGTH, TK3DES, crc16, crc32, xor
from .model import (
    KS_CONFIG_CHANGEABLE,
    KS_FREE_CREATE_DELETE,
    KS_FREE_DIRECTORY,
    KS_MASTER_CHANGEABLE,
    MAX_APPLICATIONS,
    PICC_AID,
    Application,
    Key,
    blocks,
)
from .session import FULL, MGMT, D40Channel, DESFireStatus, EV1Channel, EV2Channel, NoChannel

if TYPE_CHECKING:
    from .card import DESFireCard

_FAMILY_BITS = {0x00: DES, 0x40: TK3DES, 0x80: AES}


def _require_master(card: DESFireCard) -> None:
    if card.authenticated_key() != 0:
        raise DESFireStatus(0xAE, "master key authentication required")


def _require_directory(card: DESFireCard) -> None:
    if not card.selected.key_settings & KS_FREE_DIRECTORY:
        _require_master(card)


def get_version(card: DESFireCard, ins: int, data: bytes):
    card.channel.receive(ins, b"", data, MGMT)
    return card.channel.send(card.version_frames(), MGMT), [7, 7]


def get_card_uid(card: DESFireCard, ins: int, data: bytes):
    if isinstance(card.channel, NoChannel):
        raise DESFireStatus(0xAE, "GetCardUID needs authentication")
    card.channel.receive(ins, b"", data, MGMT)
    return card.channel.send(card.uid, FULL)


def free_memory(card: DESFireCard, ins: int, data: bytes):
    card.channel.receive(ins, b"", data, MGMT)
    return card.channel.send(max(card.free_memory(), 0).to_bytes(3, "little"), MGMT)


def format_picc(card: DESFireCard, ins: int, data: bytes):
    card.channel.receive(ins, b"", data, MGMT)
    if card.selected is not card.picc:
        raise DESFireStatus(0x9D, "FormatPICC outside the PICC level")
    _require_master(card)
    card.apps.clear()
    return card.channel.send(b"", MGMT)


def get_application_ids(card: DESFireCard, ins: int, data: bytes):
    card.channel.receive(ins, b"", data, MGMT)
    if card.selected is not card.picc:
        raise DESFireStatus(0x9D, "GetApplicationIDs outside the PICC level")
    _require_directory(card)
    return card.channel.send(b"".join(card.apps), MGMT)


def select_application(card: DESFireCard, ins: int, data: bytes):
    if len(data) != 3:
        raise DESFireStatus(0x7E, "AID length")
    app = card.app_by_aid(bytes(data))
    if app is None:
        card.select(card.picc)
        raise DESFireStatus(0xA0, "no such application")
    card.select(app)
    return b""


def create_application(card: DESFireCard, ins: int, data: bytes):
    data = card.channel.receive(ins, b"", data, MGMT)
    if len(data) < 5:
        raise DESFireStatus(0x7E, "CreateApplication length")
    if card.selected is not card.picc:
        raise DESFireStatus(0x9D, "CreateApplication outside the PICC level")
    if not card.picc.key_settings & KS_FREE_CREATE_DELETE:
        _require_master(card)
    aid, settings, settings2 = bytes(data[:3]), data[3], data[4]
    family = _FAMILY_BITS.get(settings2 & 0xC0)
    key_count = settings2 & 0x0F
    if aid == PICC_AID or family is None or not 1 <= key_count <= 14:
        raise DESFireStatus(0x9E, "CreateApplication parameters")
    if aid in card.apps:
        raise DESFireStatus(0xDE, "application exists")
    if len(card.apps) >= MAX_APPLICATIONS:
        raise DESFireStatus(0xCE, "28 applications already")
    app = Application(aid, settings, family, [Key.default(family) for _ in range(key_count)],
                      iso_enabled=bool(settings2 & 0x20))
    if app.allocation() > card.free_memory():
        raise DESFireStatus(0x0E, "out of EEPROM")
    card.apps[aid] = app
    return card.channel.send(b"", MGMT)


def delete_application(card: DESFireCard, ins: int, data: bytes):
    data = card.channel.receive(ins, b"", data, MGMT)
    if len(data) != 3:
        raise DESFireStatus(0x7E, "AID length")
    aid = bytes(data)
    if aid not in card.apps:
        raise DESFireStatus(0xA0, "no such application")
    own_master = card.channel.aid == aid and card.channel.key_no == 0
    picc_master = card.channel.aid == PICC_AID and card.channel.key_no == 0
    if not (own_master or picc_master or card.picc.key_settings & KS_FREE_CREATE_DELETE):
        raise DESFireStatus(0xAE, "PICC or application master key required")
    del card.apps[aid]
    answer = card.channel.send(b"", MGMT)
    if card.selected.aid == aid:
        card.select(card.picc)
    return answer


def get_key_settings(card: DESFireCard, ins: int, data: bytes):
    card.channel.receive(ins, b"", data, MGMT)
    _require_directory(card)
    app = card.selected
    if app is card.picc:
        second = {DES: 0, TK3DES: 0x40, AES: 0x80}[app.family] | 1
    else:
        second = app.key_settings2() & 0xCF
    return card.channel.send(bytes((app.key_settings, second)), MGMT)


def change_key_settings(card: DESFireCard, ins: int, data: bytes):
    settings = card.channel.receive(ins, b"", data, FULL, plain_len=1)
    _require_master(card)
    if not card.selected.key_settings & KS_CONFIG_CHANGEABLE:
        raise DESFireStatus(0x9D, "key settings are frozen")
    card.selected.key_settings = settings[0]
    return card.channel.send(b"", FULL)


def get_key_version(card: DESFireCard, ins: int, data: bytes):
    data = card.channel.receive(ins, b"", data, MGMT)
    if len(data) != 1:
        raise DESFireStatus(0x7E, "GetKeyVersion length")
    key_no = data[0] & 0x0F if card.selected is card.picc else data[0]
    if key_no >= len(card.selected.keys):
        raise DESFireStatus(0x40, "no such key")
    return card.channel.send(bytes((card.selected.keys[key_no].version,)), MGMT)


def _may_change(card: DESFireCard, key_no: int, auth_key: int | None) -> None:
    app = card.selected
    if auth_key is None:
        raise DESFireStatus(0xAE, "ChangeKey needs authentication")
    if key_no == 0:
        if auth_key != 0:
            raise DESFireStatus(0xAE, "only the master key changes the master key")
        if not app.key_settings & KS_MASTER_CHANGEABLE:
            raise DESFireStatus(0x9D, "master key is not changeable")
        return
    right = app.key_settings >> 4
    if right == 0xF:
        raise DESFireStatus(0x9D, "keys are frozen")
    needed = key_no if right == 0xE else right
    if auth_key != needed:
        raise DESFireStatus(0xAE, "change-key access right not granted")


def change_key(card: DESFireCard, ins: int, data: bytes):
    if len(data) < 2:
        raise DESFireStatus(0x7E, "ChangeKey length")
    app = card.selected
    channel = card.channel
    is_picc = app is card.picc
    key_no = data[0] & 0x0F if is_picc else data[0] & 0x3F
    family = _FAMILY_BITS.get(data[0] & 0xC0, DES) if is_picc else app.family
    if key_no >= len(app.keys):
        raise DESFireStatus(0x40, "no such key")
    auth_key = card.authenticated_key()
    plain = channel.decrypt_key_cryptogram(ins, bytes(data[:1]), bytes(data[1:]))
    _may_change(card, key_no, auth_key)
    length = KEY_LENGTH[family]
    body_len = length + (1 if family == AES else 0)
    if len(plain) < body_len:
        raise DESFireStatus(0x7E, "ChangeKey cryptogram too short")
    body, rest = plain[:body_len], plain[body_len:]
    same_key = key_no == auth_key
    header = bytes((ins, data[0]))
    old = bytes(app.keys[key_no].value)
    if same_key:
        new_key = body[:length]
    else:
        new_key = xor(body[:length], (old + bytes(length))[:length])
    if isinstance(channel, EV2Channel):
        crcs = b"" if same_key else crc32(new_key)
    elif isinstance(channel, EV1Channel):
        crcs = crc32(header + body) + (b"" if same_key else crc32(new_key))
    elif isinstance(channel, D40Channel):
        crcs = crc16(body) + (b"" if same_key else crc16(new_key))
    else:  # pragma: no cover - NoChannel refused above
        raise DESFireStatus(0xAE, "not authenticated")
    if rest[: len(crcs)] != crcs or any(rest[len(crcs) :]):
        raise DESFireStatus(0x1E, "ChangeKey CRC")
    app.keys[key_no].value[:] = bytes(len(app.keys[key_no].value))
    app.keys[key_no] = Key(family, bytearray(new_key), body[length] if family == AES else 0)
    if is_picc:
        app.family = family
    if same_key:
        # Changing the key we are authenticated with ends the session: the answer carries no MAC.
        card._drop_session()
        return b""
    return channel.send(b"", FULL)


HANDLERS = {
    0x60: get_version,
    0x51: get_card_uid,
    0x6E: free_memory,
    0xFC: format_picc,
    0x6A: get_application_ids,
    0x5A: select_application,
    0xCA: create_application,
    0xDA: delete_application,
    0x45: get_key_settings,
    0x54: change_key_settings,
    0x64: get_key_version,
    0xC4: change_key,
}

__all__ = ["HANDLERS", "blocks"]
