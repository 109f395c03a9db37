"""GlobalPlatform card content management: INSTALL, LOAD and DELETE (GP Card Specification 2.3 11.2-11.6)."""
from __future__ import annotations

from collections.abc import Iterator

from .. import tlv
from ..apdu import CommandAPDU
from ..errors import ProtocolUsageError
from .channel import as_channel
from .commands import CLA_GP, JCOP_SYSTEM_AIDS


def _lv(value: bytes) -> bytes:
    if len(value) > 255:
        raise ProtocolUsageError("INSTALL field longer than 255 bytes")
    return bytes((len(value),)) + bytes(value)


def install_for_load_apdu(load_file_aid: bytes, sd_aid: bytes = b"", *, load_hash: bytes = b"",
                          load_parameters: bytes = b"", token: bytes = b"") -> CommandAPDU:
    data = _lv(load_file_aid) + _lv(sd_aid) + _lv(load_hash) + _lv(load_parameters) + _lv(token)
    return CommandAPDU(CLA_GP, 0xE6, 0x02, 0x00, data, le=0)


def install_for_install_apdu(load_file_aid: bytes, module_aid: bytes, application_aid: bytes, *,
                             privileges: bytes = b"\x00", parameters: bytes = b"", token: bytes = b"",
                             make_selectable: bool = True) -> CommandAPDU:
    """INSTALL [for install (and make selectable)]; `parameters` are the applet's C9 value."""
    install_parameters = tlv.encode(0xC9, bytes(parameters))
    data = (_lv(load_file_aid) + _lv(module_aid) + _lv(application_aid) + _lv(privileges)
            + _lv(install_parameters) + _lv(token))
    p1 = 0x0C if make_selectable else 0x04
    return CommandAPDU(CLA_GP, 0xE6, p1, 0x00, data, le=0)


def load_apdus(load_file_data: bytes, *, block_size: int = 200) -> Iterator[CommandAPDU]:
    """LOAD blocks of the Load File (the CAP components), wrapped in tag C4; P1 80 on the last."""
    if not 1 <= block_size <= 239:
        raise ProtocolUsageError("LOAD block size must leave room for secure messaging (<= 239)")
    payload = tlv.encode(0xC4, bytes(load_file_data))
    chunks = [payload[i:i + block_size] for i in range(0, len(payload), block_size)]
    if len(chunks) > 256:
        raise ProtocolUsageError("LOAD: more than 256 blocks; raise the block size")
    for number, chunk in enumerate(chunks):
        yield CommandAPDU(CLA_GP, 0xE8, 0x80 if number == len(chunks) - 1 else 0x00, number, chunk, le=0)


def install_for_load(channel, load_file_aid: bytes, sd_aid: bytes = b"", **fields) -> None:
    as_channel(channel).send(install_for_load_apdu(load_file_aid, sd_aid, **fields),
                             command="INSTALL [for load]")


def load(channel, load_file_data: bytes, *, block_size: int = 200) -> None:
    target = as_channel(channel)
    for apdu in load_apdus(load_file_data, block_size=block_size):
        target.send(apdu, command=f"LOAD block {apdu.p2}")


def install_for_install(channel, load_file_aid: bytes, module_aid: bytes, application_aid: bytes,
                        **fields) -> None:
    as_channel(channel).send(install_for_install_apdu(load_file_aid, module_aid, application_aid, **fields),
                             command="INSTALL [for install]")


def delete_apdu(aid: bytes, *, related: bool = False) -> CommandAPDU:
    """DELETE of an application or load file; refuses the JCOP system packages (seed 000)."""
    if bytes(aid) in JCOP_SYSTEM_AIDS:
        raise ProtocolUsageError(f"DELETE of {bytes(aid).hex().upper()} refused: it is part of the JCOP "
                                 "operating system (removing it bricks the card)", command="DELETE")
    if not 5 <= len(aid) <= 16:
        raise ProtocolUsageError(f"DELETE: an AID is 5 to 16 bytes, got {len(aid)}", command="DELETE")
    return CommandAPDU(CLA_GP, 0xE4, 0x00, 0x80 if related else 0x00, tlv.encode(0x4F, bytes(aid)), le=0)


def delete(channel, aid: bytes, *, related: bool = False) -> None:
    as_channel(channel).send(delete_apdu(aid, related=related), command="DELETE")
