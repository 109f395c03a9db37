"""Typed errors raised by host-side protocol code.

Every error names the command that failed and, where the card answered, the
status word and its meaning, so a job can stop with a message a person can act
on. No error ever carries key material: only command headers, lengths and
redacted data reach the message.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class CardError(Exception):
    """Base of every card protocol error."""

    def __init__(self, message: str, *, command: str = "", apdu: bytes | None = None,
                 sw: int | None = None) -> None:
        self.command = command
        self.apdu = apdu
        self.sw = sw
        super().__init__(message)

    @property
    def sw_hex(self) -> str | None:
        return None if self.sw is None else f"{self.sw:04X}"

    def as_dict(self) -> dict:
        """A JSON-safe summary for job results and audit details."""
        from .sw import describe  # local import: sw imports nothing from here at import time

        return {
            "error": type(self).__name__,
            "command": self.command,
            "apdu": self.apdu.hex().upper() if self.apdu is not None else None,
            "sw": self.sw_hex,
            "meaning": describe(self.sw).meaning if self.sw is not None else None,
            "message": str(self),
        }


@contextmanager
def answered_with(sw: int) -> Iterator[None]:
    """Parsing a card's answer: a CardError raised inside gets the answer's status word if it has none."""
    try:
        yield
    except CardError as exc:
        if exc.sw is None:
            exc.sw = sw
        raise


class StatusWordError(CardError):
    """The card answered a status word other than the expected one."""

    def __init__(self, *, command: str, sw: int, apdu: bytes | None = None,
                 expected: tuple[int, ...] = (0x9000,)) -> None:
        from .sw import describe

        info = describe(sw)
        self.expected = expected
        self.meaning = info.meaning
        self.action = info.action
        super().__init__(f"{command}: card answered SW {sw:04X} ({info.meaning}); {info.action}",
                         command=command, apdu=apdu, sw=sw)


class AuthenticationError(CardError):
    """An authentication failed. Never retried automatically: cards brick."""


class CryptogramError(AuthenticationError):
    """The card cryptogram (or the card's answer in a mutual authentication) did not verify.

    Raised *before* the host sends its own cryptogram, so the card's failed
    authentication counter is not touched.
    """


class MacError(CardError):
    """A response MAC (R-MAC, DESFire CMAC) did not verify."""


class ShortResponseError(CardError):
    """The response is shorter (or longer) than the command requires."""


class MalformedResponseError(CardError):
    """The response does not parse (bad TLV, bad padding, bad CRC, ...)."""


class KcvMismatchError(CardError):
    """The key check value the card returned differs from ours."""


class CardRemovedError(CardError):
    """The card left the field (or the reader) in the middle of a command."""


class TransportError(CardError):
    """The reader or the link to it failed for another reason."""


class ProtocolUsageError(CardError):
    """The host asked for something the protocol state does not allow (a bug, not the card)."""


class AuthenticationRejectedError(StatusWordError, AuthenticationError):
    """The card refused an authentication step with a status word (wrong key, blocked key...).

    Both a StatusWordError (it carries SW and meaning) and an AuthenticationError
    (never retried).
    """
