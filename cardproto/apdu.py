"""ISO 7816-4 command and response APDUs: short and extended length, chaining."""
from __future__ import annotations

from dataclasses import dataclass

from .errors import MalformedResponseError, ShortResponseError, StatusWordError

# 256 rounds of 256 bytes is more than any card response we read
_MAX_GET_RESPONSE = 256


@dataclass(frozen=True)
class CommandAPDU:
    cla: int
    ins: int
    p1: int
    p2: int
    data: bytes = b""
    le: int | None = None  # None: no Le; 0: "up to 256" (short) / 65536 (extended)
    extended: bool | None = None  # None: choose from sizes

    def __post_init__(self) -> None:
        for name in ("cla", "ins", "p1", "p2"):
            value = getattr(self, name)
            if not 0 <= value <= 0xFF:
                raise ValueError(f"{name} must be one byte, got {value!r}")
        if len(self.data) > 65535:
            raise ValueError("command data longer than 65535 bytes")
        if self.le is not None and not 0 <= self.le <= 65536:
            raise ValueError("Le out of range")
        if self.extended is False and (len(self.data) > 255 or (self.le or 0) > 256):
            raise ValueError("short APDU cannot carry more than 255 data bytes or Le above 256")

    @property
    def header(self) -> bytes:
        return bytes((self.cla, self.ins, self.p1, self.p2))

    def is_extended(self) -> bool:
        if self.extended is not None:
            return self.extended
        return len(self.data) > 255 or (self.le is not None and self.le > 256)

    def to_bytes(self) -> bytes:
        out = bytearray(self.header)
        if self.is_extended():
            if self.data:
                out += b"\x00" + len(self.data).to_bytes(2, "big") + self.data
            if self.le is not None:
                le = self.le & 0xFFFF  # 65536 encodes as 0000
                out += (b"" if self.data else b"\x00") + le.to_bytes(2, "big")
        else:
            if self.data:
                out += bytes((len(self.data),)) + self.data
            if self.le is not None:
                out += bytes((self.le & 0xFF,))
        return bytes(out)

    def __bytes__(self) -> bytes:
        return self.to_bytes()

    @classmethod
    def parse(cls, raw: bytes) -> CommandAPDU:
        """Parse a C-APDU in any of the four ISO cases, short or extended."""
        if len(raw) < 4:
            raise ValueError("C-APDU shorter than its 4-byte header")
        cla, ins, p1, p2 = raw[:4]
        body = raw[4:]
        if not body:
            return cls(cla, ins, p1, p2)
        if len(body) == 1:
            return cls(cla, ins, p1, p2, le=body[0] or 256)
        if body[0] != 0:
            lc = body[0]
            if len(body) == 1 + lc:
                return cls(cla, ins, p1, p2, bytes(body[1:]))
            if len(body) == 2 + lc:
                return cls(cla, ins, p1, p2, bytes(body[1:1 + lc]), le=body[-1] or 256)
            raise ValueError("C-APDU length does not match Lc")
        # extended
        if len(body) == 3:
            return cls(cla, ins, p1, p2, le=int.from_bytes(body[1:3], "big") or 65536, extended=True)
        lc = int.from_bytes(body[1:3], "big")
        if lc == 0:
            raise ValueError("extended Lc of zero")
        if len(body) == 3 + lc:
            return cls(cla, ins, p1, p2, bytes(body[3:]), extended=True)
        if len(body) == 5 + lc:
            return cls(cla, ins, p1, p2, bytes(body[3:3 + lc]),
                       le=int.from_bytes(body[-2:], "big") or 65536, extended=True)
        raise ValueError("extended C-APDU length does not match Lc")

    def chained(self, block: int = 255) -> list[CommandAPDU]:
        """Split into ISO command chaining blocks (CLA bit 0x10 on all but the last).

        An APDU marked `extended=True` is sent whole: the reader takes extended length.
        """
        if len(self.data) <= block or self.extended:
            return [self]
        parts = [self.data[i:i + block] for i in range(0, len(self.data), block)]
        out = [CommandAPDU(self.cla | 0x10, self.ins, self.p1, self.p2, p) for p in parts[:-1]]
        out.append(CommandAPDU(self.cla, self.ins, self.p1, self.p2, parts[-1], self.le))
        return out


@dataclass(frozen=True)
class ResponseAPDU:
    data: bytes
    sw: int

    @property
    def sw1(self) -> int:
        return self.sw >> 8

    @property
    def sw2(self) -> int:
        return self.sw & 0xFF

    @classmethod
    def parse(cls, raw: bytes, *, command: str = "") -> ResponseAPDU:
        if len(raw) < 2:
            raise ShortResponseError(f"{command or 'response'}: R-APDU shorter than SW1 SW2",
                                     command=command)
        return cls(bytes(raw[:-2]), int.from_bytes(raw[-2:], "big"))

    def check(self, *, command: str, expected: tuple[int, ...] = (0x9000,), apdu: bytes | None = None
              ) -> ResponseAPDU:
        if self.sw not in expected:
            raise StatusWordError(command=command, sw=self.sw, apdu=apdu, expected=expected)
        return self

    def to_bytes(self) -> bytes:
        return self.data + self.sw.to_bytes(2, "big")


def exchange(transport, apdu: CommandAPDU, *, command: str, expected: tuple[int, ...] = (0x9000,),
             get_response: bool = True, retry_wrong_le: bool = True) -> ResponseAPDU:
    """Send a command (chained if needed), follow 61xx with GET RESPONSE, check the SW.

    A 6Cxx answer (wrong Le) is repeated once with the Le the card asked for,
    unless `retry_wrong_le` is False (authentication steps are never repeated).
    """
    raw_apdu = b""
    response = ResponseAPDU(b"", 0x6F00)
    blocks = apdu.chained()
    for block in blocks:
        raw_apdu = block.to_bytes()
        response = ResponseAPDU.parse(transport.transmit(raw_apdu), command=command)
        if block is not blocks[-1] and response.sw != 0x9000:
            break
    if retry_wrong_le and response.sw1 == 0x6C and blocks[-1].le is not None and len(blocks) == 1:
        retry = CommandAPDU(apdu.cla, apdu.ins, apdu.p1, apdu.p2, apdu.data, le=response.sw2 or 256)
        raw_apdu = retry.to_bytes()
        response = ResponseAPDU.parse(transport.transmit(raw_apdu), command=command)
    data = response.data
    rounds = 0
    while get_response and response.sw1 == 0x61:
        rounds += 1
        if rounds > _MAX_GET_RESPONSE:
            raise MalformedResponseError(f"{command}: card keeps answering 61xx", command=command,
                                         apdu=raw_apdu[:5], sw=response.sw)
        follow = CommandAPDU(apdu.cla & 0x03, 0xC0, 0, 0, le=response.sw2 or 256).to_bytes()
        response = ResponseAPDU.parse(transport.transmit(follow), command=command)
        data += response.data
    result = ResponseAPDU(data, response.sw)
    return result.check(command=command, expected=expected, apdu=raw_apdu[:5])
