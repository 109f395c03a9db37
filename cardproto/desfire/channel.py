"""DESFire ISO 7816 wrapping, 0xAF frame chaining and EV1/EV2 secure messaging state.

One `SecureChannel` per card connection. It turns a native command (code,
header, data) into wrapped APDUs (CLA 0x90, INS = code, P1 = P2 = 0, Lc,
data, Le = 00), follows 91AF chaining both ways, and applies the
communication mode of the current authentication:

* EV1 (AuthenticateISO 0x1A / AuthenticateAES 0xAA): a CMAC with IV chaining
  over every command and response since authentication; FULL mode encrypts
  data || CRC32(cmd || header || data) with zero padding, CBC on the chained IV.
* EV2 (AuthenticateEV2First/NonFirst): MACt = odd bytes of
  CMAC(SesAuthMACKey, cmd || CmdCtr || TI || header || data); FULL mode
  encrypts with IV = E(SesAuthENCKey, A55A || TI || CmdCtr || 0^8) and
  ISO 9797-1 M2 padding (AN12196 section 5).

Any status other than the expected ones ends the authentication (the card
does the same) and raises a typed error carrying the command, SW and meaning.
"""
from __future__ import annotations

import hmac
from dataclasses import dataclass, field

from ..errors import MacError, MalformedResponseError, ProtocolUsageError, ShortResponseError, StatusWordError
from .constants import CLA, STATUS_ADDITIONAL_FRAME, STATUS_OK, AuthMode, CommMode, KeyType
from .crypto import (
    BlockCipher,
    cmac,
    crc32,
    ev2_iv,
    pad_iso,
    pad_zero,
    truncate_mac,
    unpad_iso,
    wipe,
)

# Data bytes per wrapped frame. ISO 14443-4 frames of 64 bytes (FSC of DESFire
# EV1) leave 55 bytes after PCB, APDU header, Lc, Le and CRC.
DEFAULT_FRAME_SIZE = 55
# No DESFire answer needs more frames than this (GetVersion: 3, a full 8 kB read: ~160);
# a card that keeps answering 91AF is broken or hostile.
MAX_RESPONSE_FRAMES = 512


# Names as the data sheets spell them where capitalising the enum name would not.
_DATASHEET_NAMES = {
    0x0A: "Authenticate", 0x1A: "AuthenticateISO", 0xAA: "AuthenticateAES", 0x71: "AuthenticateEV2First",
    0x77: "AuthenticateEV2NonFirst", 0x51: "GetCardUID", 0xFC: "FormatPICC", 0x6A: "GetApplicationIDs",
    0x6F: "GetFileIDs",
}


def command_name(code: int) -> str:
    from .constants import Cmd

    if code in _DATASHEET_NAMES:
        return "DESFire " + _DATASHEET_NAMES[code]
    try:
        return "DESFire " + "".join(part.capitalize() for part in Cmd(code).name.split("_"))
    except ValueError:
        return f"DESFire command {code:02X}"


@dataclass
class SessionState:
    """Keys and counters of the current authentication. repr hides every key."""

    mode: AuthMode = AuthMode.NONE
    key_no: int | None = None
    key_type: KeyType | None = None
    cipher: BlockCipher | None = None  # EV1 session key (ENC and MAC are the same key)
    iv: bytearray = field(default_factory=bytearray)
    ses_enc: bytearray | None = None  # EV2
    ses_mac: bytearray | None = None  # EV2
    ti: bytes = b""
    cmd_ctr: int = 0

    def __repr__(self) -> str:
        return (f"SessionState(mode={self.mode.name}, key_no={self.key_no}, "
                f"cmd_ctr={self.cmd_ctr}, keys=<hidden>)")

    def wipe(self) -> None:
        if self.cipher is not None:
            self.cipher.wipe()
        wipe(self.iv)
        wipe(self.ses_enc)
        wipe(self.ses_mac)
        self.cipher = None
        self.iv = bytearray()
        self.ses_enc = None
        self.ses_mac = None
        self.mode = AuthMode.NONE
        self.key_no = None
        self.key_type = None
        self.ti = b""
        self.cmd_ctr = 0


class SecureChannel:
    def __init__(self, transport, *, frame_size: int = DEFAULT_FRAME_SIZE) -> None:
        if not 1 <= frame_size <= 255:
            raise ValueError("frame_size must be 1..255")
        self.transport = transport
        self.frame_size = frame_size
        self.session = SessionState()

    # ---------------------------------------------------------------- framing
    def _send_frame(self, code: int, data: bytes, name: str) -> tuple[bytes, int]:
        apdu = bytes((CLA, code, 0, 0)) + ((bytes((len(data),)) + data) if data else b"") + b"\x00"
        raw = self.transport.transmit(apdu)
        if len(raw) < 2:
            # Whether the card executed the command (and counted it) is unknown: the session is over.
            self.reset()
            raise ShortResponseError(f"{name}: response shorter than SW1 SW2", command=name,
                                     apdu=apdu[:5])
        sw = int.from_bytes(raw[-2:], "big")
        if sw >> 8 != 0x91:
            self.reset()
            raise StatusWordError(command=name, sw=sw, apdu=apdu[:5], expected=(0x9100,))
        return bytes(raw[:-2]), sw & 0xFF

    def exchange(self, code: int, payload: bytes, *, name: str, expected: tuple[int, ...] = (STATUS_OK,),
                 follow_chain: bool = True) -> tuple[bytes, int]:
        """Send one native command (split into 0xAF frames) and gather the whole answer.

        Returns (data, status). Raises StatusWordError, ending the session, for any
        status not in `expected` (0xAF is only accepted when `follow_chain` is False).
        """
        header = bytes((CLA, code, 0, 0))
        parts = [payload[i:i + self.frame_size] for i in range(0, len(payload), self.frame_size)] or [b""]
        data, status = self._send_frame(code, parts[0], name)
        for part in parts[1:]:
            if status != STATUS_ADDITIONAL_FRAME or data:
                self._fail(name, status, header)
            data, status = self._send_frame(STATUS_ADDITIONAL_FRAME, part, name)
        collected = bytearray(data)
        frames = 1
        while follow_chain and status == STATUS_ADDITIONAL_FRAME:
            if frames >= MAX_RESPONSE_FRAMES:
                self.reset()
                raise MalformedResponseError(f"{name}: more than {MAX_RESPONSE_FRAMES} answer frames",
                                             command=name, sw=0x91AF)
            data, status = self._send_frame(STATUS_ADDITIONAL_FRAME, b"", name)
            collected += data
            frames += 1
        if status not in expected:
            self._fail(name, status, header)
        return bytes(collected), status

    def _fail(self, name: str, status: int, header: bytes) -> None:
        self.reset()
        raise StatusWordError(command=name, sw=0x9100 | status, apdu=header,
                              expected=(0x9100,))

    def reset(self) -> None:
        """Forget (and wipe) the authentication."""
        self.session.wipe()

    # ------------------------------------------------------- secure messaging
    @property
    def authenticated(self) -> bool:
        return self.session.mode in (AuthMode.EV1, AuthMode.EV2)

    def command(self, code: int, header: bytes = b"", data: bytes = b"", *,
                tx: CommMode = CommMode.PLAIN, rx: CommMode = CommMode.PLAIN,
                expected: tuple[int, ...] = (STATUS_OK,), rx_length: int | None = None,
                suffix: bytes = b"", ends_session: bool = False) -> bytes:
        """Run a command in the current secure messaging; return the plain response data.

        `suffix` is appended after the CRC in EV1 FULL mode (ChangeKey's CRC of the
        new key). `ends_session` means the card answers without MAC and drops the
        authentication (ChangeKey of the key in use). `rx_length` is the plain
        length of a FULL response when the caller knows it.
        """
        name = command_name(code)
        mode = self.session.mode
        if mode == AuthMode.LEGACY and (tx != CommMode.PLAIN or rx != CommMode.PLAIN):
            raise ProtocolUsageError(f"{name}: MAC/FULL after native legacy authentication (0x0A) is not "
                                     "supported; authenticate with 0x1A (ISO) or AES", command=name)
        if not self.authenticated:
            if tx != CommMode.PLAIN or rx != CommMode.PLAIN:
                raise ProtocolUsageError(f"{name}: {max(tx, rx).name} mode needs an authentication",
                                         command=name)
            return self.exchange(code, bytes(header) + bytes(data), name=name, expected=expected)[0]
        if mode == AuthMode.EV1:
            return self._ev1(code, bytes(header), bytes(data), tx, rx, expected, rx_length, suffix,
                             ends_session, name)
        return self._ev2(code, bytes(header), bytes(data), tx, rx, expected, ends_session, name)

    # EV1 -------------------------------------------------------------------
    def _ev1(self, code, header, data, tx, rx, expected, rx_length, suffix, ends_session, name) -> bytes:
        s = self.session
        cipher = s.cipher
        bs = cipher.block_size
        if tx == CommMode.FULL:
            plain = bytearray(pad_zero(data + crc32(bytes((code,)) + header + data) + suffix, bs))
            enc = cipher.encrypt_cbc(s.iv, plain)
            wipe(plain)
            s.iv[:] = enc[-bs:]
            payload = header + enc
        else:
            mac = cmac(cipher, bytes((code,)) + header + data, s.iv)
            s.iv[:] = mac
            payload = header + data + (mac[:8] if tx == CommMode.MAC else b"")
        answer, status = self.exchange(code, payload, name=name, expected=expected)
        if ends_session:
            self.reset()
            return answer
        if rx == CommMode.FULL:
            return self._ev1_decrypt(answer, status, rx_length, name)
        if len(answer) < 8:
            self.reset()
            raise ShortResponseError(f"{name}: response too short for its CMAC", command=name,
                                     sw=0x9100 | status)
        body, received = answer[:-8], answer[-8:]
        mac = cmac(cipher, body + bytes((status,)), s.iv)
        if not hmac.compare_digest(mac[:8], received):
            self.reset()
            raise MacError(f"{name}: response CMAC does not verify", command=name, sw=0x9100 | status)
        s.iv[:] = mac
        return body

    def _ev1_decrypt(self, answer: bytes, status: int, rx_length: int | None, name: str) -> bytes:
        s = self.session
        bs = s.cipher.block_size
        if not answer or len(answer) % bs:
            self.reset()
            raise ShortResponseError(f"{name}: encrypted response is not whole blocks", command=name,
                                     sw=0x9100 | status)
        plain = s.cipher.decrypt_cbc(s.iv, answer)
        s.iv[:] = answer[-bs:]
        candidates = [rx_length] if rx_length is not None else range(len(plain) - 4, len(plain) - 4 - bs, -1)
        # data || CRC32 || zero padding: without the length, every place where the CRC verifies is a
        # reading. For about 1 answer in 240 a second one does (the data plus the CRC's first byte,
        # when the padding begins where that longer CRC would end): never guess between them.
        fits = [length for length in candidates
                if 0 <= length and length + 4 <= len(plain) and not any(plain[length + 4:])
                and hmac.compare_digest(crc32(plain[:length] + bytes((status,))), plain[length:length + 4])]
        if len(fits) == 1:
            return plain[:fits[0]]
        if fits:
            # the answer is the card's (a CRC verified under the session key) and the session stays in step
            raise MalformedResponseError(
                f"{name}: EV1 FULL mode answer whose length cannot be told: its CRC32 verifies for "
                f"{' and '.join(map(str, sorted(fits)))} bytes; ask for the length (ReadData's length, "
                "ReadRecords' count and record size)", command=name, sw=0x9100 | status)
        self.reset()
        raise MacError(f"{name}: CRC32 of the decrypted response does not verify", command=name,
                       sw=0x9100 | status)

    # EV2 -------------------------------------------------------------------
    def _ev2_mac(self, data: bytes) -> bytes:
        from .crypto import aes_cmac

        return truncate_mac(aes_cmac(self.session.ses_mac, data))

    def _ev2(self, code, header, data, tx, rx, expected, ends_session, name) -> bytes:
        s = self.session
        if s.cmd_ctr >= 0xFFFF:
            # Refuse before sending: the card would execute the command, then its answer could not be
            # checked under a counter that has no next value.
            self.reset()
            raise ProtocolUsageError(f"{name}: EV2 command counter exhausted; authenticate again",
                                     command=name)
        ctr = s.cmd_ctr.to_bytes(2, "little")
        if tx == CommMode.FULL and data:
            iv = ev2_iv(s.ses_enc, s.ti, s.cmd_ctr, response=False)
            enc = BlockCipher(s.ses_enc).encrypt_cbc(iv, pad_iso(data, 16))
            body = header + enc
        else:
            body = header + data
        if tx in (CommMode.MAC, CommMode.FULL):
            body += self._ev2_mac(bytes((code,)) + ctr + s.ti + body)
        answer, status = self.exchange(code, body, name=name, expected=expected)
        s.cmd_ctr += 1
        if ends_session:
            self.reset()
            return answer
        if rx == CommMode.PLAIN:
            return answer
        if len(answer) < 8:
            self.reset()
            raise ShortResponseError(f"{name}: response too short for its MAC", command=name,
                                     sw=0x9100 | status)
        body, received = answer[:-8], answer[-8:]
        ctr = s.cmd_ctr.to_bytes(2, "little")
        if not hmac.compare_digest(self._ev2_mac(bytes((status,)) + ctr + s.ti + body), received):
            self.reset()
            raise MacError(f"{name}: response MAC does not verify", command=name, sw=0x9100 | status)
        if rx == CommMode.MAC or not body:
            return body
        if len(body) % 16:
            self.reset()
            raise MalformedResponseError(f"{name}: encrypted response is not whole blocks", command=name,
                                         sw=0x9100 | status)
        iv = ev2_iv(s.ses_enc, s.ti, s.cmd_ctr, response=True)
        plain = unpad_iso(BlockCipher(s.ses_enc).decrypt_cbc(iv, body))
        if plain is None:
            self.reset()
            raise MalformedResponseError(f"{name}: bad padding in decrypted response", command=name,
                                         sw=0x9100 | status)
        return plain
