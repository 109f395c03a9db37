"""The card's secure channels after authentication: D40 (legacy), EV1 (CMAC IV chaining), EV2 (TI, CmdCtr)."""
from __future__ import annotations

from .crypto import (
    S_AES,
    block_size,
    cbc_decrypt,
    cbc_encrypt,
    cmac,
    crc16,
    crc32,
    ecb_encrypt,
    legacy_receive,
    legacy_send,
    mac_truncate,
    pad_iso,
    pad_zero,
    unpad_iso,
    wipe,
)
from .model import FULL, MACED, PLAIN

# Command class for management commands: D40 and EV1 send them plain (EV1 still
# chains the CMAC IV over them and MACs the answer); EV2 MACs both directions.
MGMT = 0x10

# Card status codes this module raises.
INTEGRITY_ERROR = 0x1E
LENGTH_ERROR = 0x7E


class DESFireStatus(Exception):
    """A status byte the card answers with (91 xx); never carries key material."""

    def __init__(self, code: int, why: str = "") -> None:
        super().__init__(f"status 0x{code:02X} {why}".strip())
        self.code = code


class NoChannel:
    """Not authenticated: everything travels in plain."""

    name = "none"
    key_no: int | None = None
    aid: bytes | None = None

    def receive(self, ins: int, header: bytes, body: bytes, mode: int, plain_len: int | None = None) -> bytes:
        return body

    def send(self, data: bytes, mode: int) -> bytes:
        return data

    def decrypt_key_cryptogram(self, ins: int, header: bytes, body: bytes) -> bytes:
        raise DESFireStatus(0xAE, "not authenticated")

    def wire_length(self, n: int, mode: int) -> int:
        """How many bytes n bytes of command data take on the wire in this mode."""
        return n

    def close(self) -> None:
        pass


class _Keyed:
    def __init__(self, algorithm: str, session_key: bytes, key_no: int, aid: bytes) -> None:
        self.algorithm = algorithm
        self.key = bytearray(session_key)
        self.key_no = key_no
        self.aid = aid
        self.bs = block_size(algorithm)

    def close(self) -> None:
        wipe(self.key)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(algorithm={self.algorithm!r}, key_no={self.key_no}, key=<hidden>)"


class D40Channel(_Keyed):
    """Legacy DESFire (AuthenticateLegacy 0x0A): 4-byte MAC, CRC16, fresh zero IV per message."""

    name = "d40"

    def _mac(self, data: bytes) -> bytes:
        return cbc_encrypt(self.algorithm, self.key, bytes(self.bs), pad_zero(data, self.bs))[-self.bs :][:4]

    def receive(self, ins, header, body, mode, plain_len=None):
        if mode == MACED:
            if len(body) < 4:
                raise DESFireStatus(LENGTH_ERROR, "short MAC")
            data, mac = body[:-4], body[-4:]
            if self._mac(data) != mac:
                raise DESFireStatus(INTEGRITY_ERROR, "MAC")
            return data
        if mode == FULL:
            if not body or len(body) % self.bs:
                raise DESFireStatus(LENGTH_ERROR, "cryptogram length")
            plain = legacy_receive(self.algorithm, self.key, body)
            return _strip_crc(plain, plain_len, 2, lambda d: crc16(d))
        return body

    def send(self, data, mode):
        if not data:
            return b""
        if mode == MACED:
            return data + self._mac(data)
        if mode == FULL:
            return legacy_send(self.algorithm, self.key, pad_zero(data + crc16(data), self.bs))
        return data

    def decrypt_key_cryptogram(self, ins, header, body):
        if not body or len(body) % self.bs:
            raise DESFireStatus(LENGTH_ERROR, "cryptogram length")
        return legacy_receive(self.algorithm, self.key, body)

    def wire_length(self, n, mode):
        if mode == MACED:
            return n + 4
        if mode == FULL:
            return len(pad_zero(bytes(n + 2), self.bs))
        return n


class EV1Channel(_Keyed):
    """AuthenticateISO/AES secure messaging: CMAC over every command and answer, CBC IV chained throughout."""

    name = "ev1"

    def __init__(self, algorithm, session_key, key_no, aid):
        super().__init__(algorithm, session_key, key_no, aid)
        self.iv = bytes(self.bs)

    def _cmac(self, data: bytes) -> bytes:
        self.iv = cmac(self.algorithm, self.key, data, self.iv)
        return self.iv[:8]

    def receive(self, ins, header, body, mode, plain_len=None):
        command = bytes((ins,)) + header
        if mode == MACED:
            if len(body) < 8:
                raise DESFireStatus(LENGTH_ERROR, "short CMAC")
            data, mac = body[:-8], body[-8:]
            if self._cmac(command + data) != mac:
                raise DESFireStatus(INTEGRITY_ERROR, "CMAC")
            return data
        if mode == FULL:
            if not body or len(body) % self.bs:
                raise DESFireStatus(LENGTH_ERROR, "cryptogram length")
            plain = cbc_decrypt(self.algorithm, self.key, self.iv, body)
            self.iv = body[-self.bs :]
            return _strip_crc(plain, plain_len, 4, lambda d: crc32(command + d))
        self._cmac(command + body)
        return body

    def send(self, data, mode):
        if mode == FULL and data:
            plain = pad_zero(data + crc32(data + b"\x00"), self.bs)
            crypto = cbc_encrypt(self.algorithm, self.key, self.iv, plain)
            self.iv = crypto[-self.bs :]
            return crypto
        return data + self._cmac(data + b"\x00")

    def decrypt_key_cryptogram(self, ins, header, body):
        if not body or len(body) % self.bs:
            raise DESFireStatus(LENGTH_ERROR, "cryptogram length")
        plain = cbc_decrypt(self.algorithm, self.key, self.iv, body)
        self.iv = body[-self.bs :]
        return plain

    def wire_length(self, n, mode):
        if mode == MACED:
            return n + 8
        if mode == FULL:
            return len(pad_zero(bytes(n + 4), self.bs))
        return n


class EV2Channel:
    """EV2 secure messaging (AN12196 section 4): MACt over Cmd||CmdCtr||TI||..., IVs from TI and CmdCtr."""

    name = "ev2"
    algorithm = S_AES

    def __init__(self, enc: bytes, mac: bytes, ti: bytes, cmd_ctr: int, key_no: int, aid: bytes) -> None:
        self.enc = bytearray(enc)
        self.mac = bytearray(mac)
        self.ti = bytes(ti)
        self.cmd_ctr = cmd_ctr
        self.key_no = key_no
        self.aid = aid

    def __repr__(self) -> str:
        return f"EV2Channel(ti={self.ti.hex()}, cmd_ctr={self.cmd_ctr}, key_no={self.key_no}, keys=<hidden>)"

    def close(self) -> None:
        wipe(self.enc)
        wipe(self.mac)

    def _ctr(self) -> bytes:
        return (self.cmd_ctr & 0xFFFF).to_bytes(2, "little")

    def iv(self, label: bytes) -> bytes:
        return ecb_encrypt(S_AES, self.enc, label + self.ti + self._ctr() + bytes(8))

    def _check_mac(self, ins: int, header: bytes, body: bytes) -> bytes:
        if len(body) < 8:
            raise DESFireStatus(LENGTH_ERROR, "short MAC")
        data, mac = body[:-8], body[-8:]
        expected = mac_truncate(cmac(S_AES, self.mac, bytes((ins,)) + self._ctr() + self.ti + header + data))
        if expected != mac:
            raise DESFireStatus(INTEGRITY_ERROR, "MAC")
        return data

    def receive(self, ins, header, body, mode, plain_len=None):
        if mode in (MACED, MGMT):
            return self._check_mac(ins, header, body)
        if mode == FULL:
            crypto = self._check_mac(ins, header, body)
            if not crypto:
                return b""
            if len(crypto) % 16:
                raise DESFireStatus(LENGTH_ERROR, "cryptogram length")
            plain = unpad_iso(cbc_decrypt(S_AES, self.enc, self.iv(b"\xa5\x5a"), crypto))
            if plain is None or (plain_len is not None and len(plain) != plain_len):
                raise DESFireStatus(INTEGRITY_ERROR, "padding")
            return plain
        return body

    def send(self, data, mode):
        self.cmd_ctr += 1
        if mode == PLAIN:
            return data
        if mode == FULL and data:
            data = cbc_encrypt(S_AES, self.enc, self.iv(b"\x5a\xa5"), pad_iso(data))
        return data + mac_truncate(cmac(S_AES, self.mac, b"\x00" + self._ctr() + self.ti + data))

    def decrypt_key_cryptogram(self, ins, header, body):
        crypto = self._check_mac(ins, header, body)
        if not crypto or len(crypto) % 16:
            raise DESFireStatus(LENGTH_ERROR, "cryptogram length")
        plain = unpad_iso(cbc_decrypt(S_AES, self.enc, self.iv(b"\xa5\x5a"), crypto))
        if plain is None:
            raise DESFireStatus(INTEGRITY_ERROR, "padding")
        return plain

    def wire_length(self, n, mode):
        if mode in (MACED, MGMT):
            return n + 8
        if mode == FULL:
            return (n // 16 + 1) * 16 + 8
        return n


def _strip_crc(plain: bytes, plain_len: int | None, crc_len: int, crc_of) -> bytes:
    """Find data||CRC||zero padding; with no expected length, take the last position whose CRC fits."""
    candidates = [plain_len] if plain_len is not None else range(len(plain) - crc_len, -1, -1)
    for n in candidates:
        if n < 0 or n + crc_len > len(plain):
            continue
        data, crc, rest = plain[:n], plain[n : n + crc_len], plain[n + crc_len :]
        if any(rest):
            continue
        if crc_of(data) == crc:
            return data
    raise DESFireStatus(INTEGRITY_ERROR, "CRC")

