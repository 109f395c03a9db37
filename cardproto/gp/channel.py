"""What GP commands send through: a plain transport or an open secure channel, one `send()` for both."""
from __future__ import annotations

from typing import Protocol, runtime_checkable

from ..apdu import CommandAPDU, ResponseAPDU, exchange
from ..errors import ProtocolUsageError

# Security level bits (GP Card Specification 2.3 table 10-1, Amendment D 5.1)
NO_SECURITY = 0x00
C_MAC = 0x01
C_DECRYPTION = 0x02
R_MAC = 0x10
R_ENCRYPTION = 0x20
AUTHENTICATED = 0x80


@runtime_checkable
class Channel(Protocol):
    def send(self, apdu: CommandAPDU, *, command: str, expected: tuple[int, ...] = (0x9000,),
             redact: bool = False) -> ResponseAPDU:
        """Wrap (if secure), transmit, unwrap, check the SW against `expected`."""


class PlainChannel:
    """A transport without secure messaging (SELECT, GET DATA before authentication)."""

    secure = False

    def __init__(self, transport) -> None:
        self.transport = transport

    def send(self, apdu: CommandAPDU, *, command: str, expected: tuple[int, ...] = (0x9000,),
             redact: bool = False) -> ResponseAPDU:
        if redact:
            request_redaction(self.transport)
        return exchange(self.transport, apdu, command=command, expected=expected)


def as_channel(transport_or_channel) -> Channel:
    if hasattr(transport_or_channel, "send"):
        return transport_or_channel
    if hasattr(transport_or_channel, "transmit"):
        return PlainChannel(transport_or_channel)
    raise ProtocolUsageError("need a transport (transmit) or a channel (send)")


def request_redaction(transport) -> None:
    """Ask a tracing transport to hide the next exchange's bodies (commands carrying keys)."""
    redact_next = getattr(transport, "redact_next", None)
    if redact_next is not None:
        redact_next()
