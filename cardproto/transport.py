"""How host code reaches a card: one `transmit(bytes) -> bytes` callable.

Protocol classes take any object with `transmit`; the agent passes a pyscard
connection wrapped here, tests pass a virtual card directly. A `Tracer`
records each exchange for the job's APDU trace; steps that carry key material
mark their data as redacted before it is recorded.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

from .errors import CardRemovedError, TransportError


class Transport(Protocol):
    def transmit(self, apdu: bytes) -> bytes:
        """Send one C-APDU, return the R-APDU including SW1 SW2."""


@dataclass
class TraceEntry:
    direction: str  # "TX" or "RX"
    apdu_hex: str
    redacted: bool = False

    def as_dict(self) -> dict:
        return {"direction": self.direction, "apdu_hex": self.apdu_hex, "redacted": self.redacted}


def redact(apdu: bytes, keep: int = 5) -> str:
    """The header (and Lc) in hex, the body replaced by its length."""
    head = apdu[:keep].hex().upper()
    rest = len(apdu) - keep
    return head + (f"<{rest} bytes redacted>" if rest > 0 else "")


@dataclass
class TracingTransport:
    """Wraps a transport and keeps an ordered trace of every exchange.

    `redact_next` asks that the next command's body and response body be
    replaced by their lengths (PUT KEY, ChangeKey, anything carrying a key).
    """

    inner: Transport
    entries: list[TraceEntry] = field(default_factory=list)
    _redact_next: bool = False
    commands_sent: int = 0

    def redact_next(self) -> None:
        self._redact_next = True

    def transmit(self, apdu: bytes) -> bytes:
        hide = self._redact_next
        self._redact_next = False
        self.entries.append(TraceEntry("TX", redact(apdu) if hide else apdu.hex().upper(), hide))
        self.commands_sent += 1
        response = self.inner.transmit(apdu)
        shown = (redact(response, keep=0) + response[-2:].hex().upper()) if hide and len(response) > 2 \
            else response.hex().upper()
        self.entries.append(TraceEntry("RX", shown, hide and len(response) > 2))
        return response


class PyscardTransport:
    """A pyscard connection as a Transport; tells a removed card from other faults."""

    def __init__(self, connection) -> None:
        self._connection = connection

    def transmit(self, apdu: bytes) -> bytes:
        from smartcard.Exceptions import CardConnectionException

        try:
            data, sw1, sw2 = self._connection.transmit(list(apdu))
        except CardConnectionException as exc:  # pragma: no cover - exercised through pcscd tests
            if _is_removal(exc) or self._card_left():
                raise CardRemovedError("card removed during command", apdu=apdu[:5]) from None
            raise TransportError(f"reader error: {exc.__class__.__name__}", apdu=apdu[:5]) from None
        return bytes(data) + bytes([sw1, sw2])

    def _card_left(self, settle_s: float = 1.0) -> bool:
        """Whether the card has left the reader.

        A card pulled mid-command first shows as an empty answer or "transaction
        failed"; the reader reports the removal only at its next presence poll
        (vpcd: ~0.45 s), so ask the reader's status for up to `settle_s`.
        """
        from smartcard.Exceptions import CardConnectionException

        deadline = time.monotonic() + settle_s
        while True:
            try:
                self._connection.getATR()
            except CardConnectionException as exc:
                return _is_removal(exc)
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)


# PC/SC result codes that mean the card is gone (winscard.h).
_REMOVAL_CODES = {
    0x80100069,  # SCARD_W_REMOVED_CARD
    0x80100066,  # SCARD_W_UNRESPONSIVE_CARD
    0x80100068,  # SCARD_W_RESET_CARD
    0x8010000C,  # SCARD_E_NO_SMARTCARD
    0x80100067,  # SCARD_W_UNPOWERED_CARD
    0x80100017,  # SCARD_E_READER_UNAVAILABLE (vpcd: socket closed)
}


def _is_removal(exc) -> bool:
    code = getattr(exc, "hresult", None)
    if code is None:
        return False
    return (code & 0xFFFFFFFF) in _REMOVAL_CODES
