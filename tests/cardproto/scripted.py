"""A transport that plays a recorded APDU exchange and checks every command byte for byte."""
from __future__ import annotations


class ScriptedTransport:
    def __init__(self, script: list[tuple[str | None, str]]) -> None:
        # (expected command hex or None for "anything", response hex incl. SW)
        self.script = [(None if c is None else bytes.fromhex(c), bytes.fromhex(r)) for c, r in script]
        self.sent: list[bytes] = []

    def transmit(self, apdu: bytes) -> bytes:
        index = len(self.sent)
        self.sent.append(bytes(apdu))
        assert index < len(self.script), f"unexpected extra command {apdu.hex().upper()}"
        expected, response = self.script[index]
        if expected is not None:
            assert apdu.hex().upper() == expected.hex().upper(), f"command {index} differs"
        return response

    @property
    def done(self) -> bool:
        return len(self.sent) == len(self.script)

    def ins_sent(self) -> list[int]:
        return [apdu[1] for apdu in self.sent]
