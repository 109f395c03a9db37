"""A scripted DESFire card for host tests: checks each C-APDU and plays back the recorded answer."""
from __future__ import annotations


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def wrap(native: str) -> bytes:
    """Native command (code + parameters, hex) as the ISO 7816 wrapped APDU 90 code 00 00 Lc data 00."""
    raw = h(native)
    body = (bytes((len(raw) - 1,)) + raw[1:]) if len(raw) > 1 else b""
    return bytes((0x90, raw[0], 0, 0)) + body + b"\x00"


def answer(native: str) -> bytes:
    """Native answer (status + data, hex) as the wrapped R-APDU data || 91 status."""
    raw = h(native)
    return raw[1:] + bytes((0x91, raw[0]))


class ScriptedCard:
    """Expects the listed exchanges in order; `None` as the command accepts anything."""

    def __init__(self, steps: list[tuple[bytes | None, bytes]]) -> None:
        self.steps = list(steps)
        self.sent: list[bytes] = []

    def transmit(self, apdu: bytes) -> bytes:
        self.sent.append(bytes(apdu))
        assert self.steps, f"unexpected extra command {apdu.hex().upper()}"
        expected, response = self.steps.pop(0)
        if expected is not None:
            assert apdu.hex().upper() == expected.hex().upper()
        return response

    def done(self) -> bool:
        return not self.steps


class RandomFeed:
    """Stands in for os.urandom: returns the published RndA values in order."""

    def __init__(self, *values: str) -> None:
        self.values = [h(v) for v in values]

    def __call__(self, n: int) -> bytes:
        value = self.values.pop(0)
        assert len(value) == n
        return value
