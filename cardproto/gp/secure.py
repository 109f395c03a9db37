"""Shared machinery of SCP02 and SCP03 sessions: send, GET RESPONSE, closing and wiping."""
from __future__ import annotations

from ..apdu import _MAX_GET_RESPONSE, CommandAPDU, ResponseAPDU
from ..crypto import wipe
from ..errors import CardError, MalformedResponseError, ProtocolUsageError
from .channel import request_redaction


class SecureChannelBase:
    """One authenticated session. Subclasses implement `wrap` and `unwrap`.

    Any MAC or cryptographic failure closes the session (keys wiped): the card
    has dropped its side of it too, and a new session needs a person's decision
    if authentication failed.
    """

    secure = True
    protocol = ""

    def __init__(self, transport, security_level: int) -> None:
        self.transport = transport
        self.security_level = security_level
        self._secrets: list[bytearray] = []
        self._open = True

    @property
    def is_open(self) -> bool:
        return self._open

    def _hold(self, secret: bytes | bytearray) -> bytearray:
        held = bytearray(secret)
        self._secrets.append(held)
        return held

    def close(self) -> None:
        for secret in self._secrets:
            wipe(secret)
        self._open = False

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def wrap(self, apdu: CommandAPDU) -> CommandAPDU:  # pragma: no cover - abstract
        raise NotImplementedError

    def unwrap(self, response: ResponseAPDU, *, command: str) -> ResponseAPDU:  # pragma: no cover
        raise NotImplementedError

    def send(self, apdu: CommandAPDU, *, command: str, expected: tuple[int, ...] = (0x9000,),
             redact: bool = False) -> ResponseAPDU:
        if not self._open:
            raise ProtocolUsageError(f"{command}: the {self.protocol} session is closed", command=command)
        if apdu.cla & 0x04:
            raise ProtocolUsageError(f"{command}: pass the plain command, the channel adds secure messaging",
                                     command=command)
        try:
            wrapped = self.wrap(apdu)
            raw = wrapped.to_bytes()
            if redact:
                request_redaction(self.transport)
            response = ResponseAPDU.parse(self.transport.transmit(raw), command=command)
            data = response.data
            rounds = 0
            while response.sw1 == 0x61:
                rounds += 1
                if rounds > _MAX_GET_RESPONSE:
                    raise MalformedResponseError(f"{command}: card keeps answering 61xx", command=command,
                                                 apdu=raw[:5], sw=response.sw)
                follow = CommandAPDU(apdu.cla & 0x03, 0xC0, 0, 0, le=response.sw2 or 256).to_bytes()
                response = ResponseAPDU.parse(self.transport.transmit(follow), command=command)
                data += response.data
            plain = self.unwrap(ResponseAPDU(data, response.sw), command=command)
        except CardError as exc:
            if not isinstance(exc, ProtocolUsageError):
                self.close()
            raise
        return plain.check(command=command, expected=expected, apdu=raw[:5])

    def encrypt_key(self, key: bytes | bytearray) -> bytes:  # pragma: no cover - abstract
        """Encrypt a key component with the channel's DEK for PUT KEY."""
        raise NotImplementedError


def is_protected_sw(sw: int) -> bool:
    """Status words that carry R-MAC / R-ENC: success and warnings (GP Amendment D 6.2.5)."""
    return sw == 0x9000 or (sw >> 8) in (0x62, 0x63)


def lc_field(length: int, extended: bool) -> bytes:
    return length.to_bytes(3, "big") if extended else bytes((length,))


def check_level(level: int, allowed: tuple[int, ...], protocol: str) -> None:
    if level not in allowed:
        allowed_text = ", ".join(f"{x:02X}" for x in allowed)
        raise ProtocolUsageError(f"{protocol}: security level {level:02X} not supported (use {allowed_text})")
