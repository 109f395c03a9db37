"""DESFire authentication: AuthenticateEV2First/NonFirst, AuthenticateAES, AuthenticateISO and native 0x0A.

A mixin of `DESFire` (session.py). An authentication that fails is never
retried: the object refuses further authentications until
`acknowledge_auth_failure()` is called by code that has recorded the failure
(ARCHITECTURE.md, "Safety rules that come from the cards themselves").
"""
from __future__ import annotations

from collections.abc import Callable

from ..errors import (
    AuthenticationRejectedError,
    CardError,
    CryptogramError,
    ProtocolUsageError,
    ShortResponseError,
    StatusWordError,
)
from .channel import command_name
from .constants import STATUS_ADDITIONAL_FRAME, AuthMode, Cmd, KeyType
from .crypto import BlockCipher, ev1_session_key, ev2_session_keys, rotate_left, wipe


class AuthCommands:
    pd_cap2: bytes = b""
    pcd_cap2: bytes = b""

    def acknowledge_auth_failure(self) -> None:
        """Allow authenticating again, once the failure has been recorded by the caller."""
        self._auth_failed = False

    def _begin_auth(self, name: str, key_no: int) -> None:
        if self._auth_failed:
            raise ProtocolUsageError(f"{name}: an authentication already failed on this card; not "
                                     "retrying (a person must decide)", command=name)
        if not 0 <= key_no <= 0x0D:
            raise ProtocolUsageError(f"{name}: key number {key_no} out of range", command=name)
        self._channel.reset()

    def _auth_guard(self, name: str, run: Callable[[], None]) -> None:
        try:
            run()
        except StatusWordError as exc:
            self._auth_failed = True
            self._channel.reset()
            raise AuthenticationRejectedError(command=name, sw=exc.sw, apdu=exc.apdu) from None
        except CardError:
            self._auth_failed = True
            self._channel.reset()
            raise

    def authenticate_aes(self, key_no: int, key: bytearray) -> None:
        """EV1 AuthenticateAES (0xAA); EV1 secure messaging afterwards."""
        self._authenticate_ev1(Cmd.AUTHENTICATE_AES, key_no, key, KeyType.AES)

    def authenticate_legacy(self, key_no: int, key: bytearray, key_type: KeyType = KeyType.DES, *,
                            native: bool = False) -> None:
        """DES/2K3DES/3K3DES authentication.

        Default: AuthenticateISO (0x1A), followed by EV1 secure messaging (CMAC,
        CBC with chained IV). `native=True` runs the DESFire (D40) handshake 0x0A
        instead; afterwards only plain commands are offered, because the D40
        secure messaging (CRC16, 4-byte MAC, "send mode" decipher) is not
        implemented here.
        """
        if key_type == KeyType.AES or (native and key_type == KeyType.TDES3K):
            raise ProtocolUsageError("authenticate_legacy takes DES/2K3DES keys (and 3K3DES with 0x1A)",
                                     command=command_name(Cmd.AUTHENTICATE_ISO))
        if native:
            self._authenticate_native(key_no, key)
        else:
            self._authenticate_ev1(Cmd.AUTHENTICATE_ISO, key_no, key, key_type)

    def _authenticate_native(self, key_no: int, key: bytearray) -> None:
        code = Cmd.AUTHENTICATE_LEGACY
        name = command_name(code)
        self._begin_auth(name, key_no)

        def run() -> None:
            cipher = BlockCipher(key, KeyType.DES)
            rnd_a = bytearray()
            try:
                enc_b, _ = self._channel.exchange(code, bytes((key_no,)), name=name,
                                                  expected=(STATUS_ADDITIONAL_FRAME,), follow_chain=False)
                if len(enc_b) != 8:
                    raise ShortResponseError(f"{name}: encrypted RndB is {len(enc_b)} bytes, expected 8",
                                             command=name, sw=0x91AF)
                # D40 "receive" deciphers each block alone; "send" deciphers in a CBC-like chain.
                rnd_b = cipher.decrypt_ecb(enc_b)
                rnd_a = bytearray(self._random(8))
                first = cipher.decrypt_ecb(bytes(rnd_a))
                second = cipher.decrypt_ecb(bytes(x ^ y for x, y in zip(first, rotate_left(rnd_b),
                                                                        strict=True)))
                enc_a, _ = self._channel.exchange(Cmd.ADDITIONAL_FRAME, first + second, name=name)
                if len(enc_a) != 8:
                    raise ShortResponseError(f"{name}: encrypted RndA' is {len(enc_a)} bytes, expected 8",
                                             command=name, sw=0x9100)
                if cipher.decrypt_ecb(enc_a) != rotate_left(bytes(rnd_a)):
                    raise CryptogramError(f"{name}: the card's RndA' does not match; wrong key or not "
                                          "the expected card", command=name, sw=0x9100)
                s = self._channel.session
                session = ev1_session_key(KeyType.DES, bytes(rnd_a), rnd_b, cipher.is_single_des)
                s.cipher = BlockCipher(session, KeyType.DES)
                wipe(session)
                s.mode, s.key_no, s.key_type = AuthMode.LEGACY, key_no, KeyType.DES
            finally:
                wipe(rnd_a)
                cipher.wipe()

        self._auth_guard(name, run)

    def _authenticate_ev1(self, code: Cmd, key_no: int, key: bytearray, key_type: KeyType) -> None:
        name = command_name(code)
        self._begin_auth(name, key_no)

        def run() -> None:
            cipher = BlockCipher(key, key_type)
            bs = cipher.block_size
            rnd_len = 16 if key_type in (KeyType.AES, KeyType.TDES3K) else 8
            rnd_a = bytearray()
            try:
                enc_b, _ = self._channel.exchange(code, bytes((key_no,)), name=name,
                                                  expected=(STATUS_ADDITIONAL_FRAME,), follow_chain=False)
                if len(enc_b) != rnd_len:
                    raise ShortResponseError(f"{name}: encrypted RndB is {len(enc_b)} bytes, expected "
                                             f"{rnd_len}", command=name, sw=0x91AF)
                # EV1 chains the CBC IV through the whole handshake (starting at zero).
                rnd_b = cipher.decrypt_cbc(bytes(bs), enc_b)
                rnd_a = bytearray(self._random(rnd_len))
                token = cipher.encrypt_cbc(enc_b[-bs:], bytes(rnd_a) + rotate_left(rnd_b))
                enc_a, _ = self._channel.exchange(Cmd.ADDITIONAL_FRAME, token, name=name)
                if len(enc_a) != rnd_len:
                    raise ShortResponseError(f"{name}: encrypted RndA' is {len(enc_a)} bytes, expected "
                                             f"{rnd_len}", command=name, sw=0x9100)
                rnd_a_rot = cipher.decrypt_cbc(token[-bs:], enc_a)
                if rnd_a_rot != rotate_left(bytes(rnd_a)):
                    raise CryptogramError(f"{name}: the card's RndA' does not match; wrong key or not "
                                          "the expected card", command=name, sw=0x9100)
                session = ev1_session_key(key_type, bytes(rnd_a), rnd_b, cipher.is_single_des)
                s = self._channel.session
                s.cipher = BlockCipher(session, key_type)
                wipe(session)
                s.iv = bytearray(bs)
                s.mode = AuthMode.EV1
                s.key_no = key_no
                s.key_type = key_type
            finally:
                wipe(rnd_a)
                cipher.wipe()

        self._auth_guard(name, run)

    def authenticate_ev2_first(self, key_no: int, key: bytearray) -> None:
        """AuthenticateEV2First (0x71): new TI, CmdCtr = 0, EV2 secure messaging (AN12196 6.6)."""
        self._authenticate_ev2(Cmd.AUTHENTICATE_EV2_FIRST, key_no, key)

    def authenticate_ev2_non_first(self, key_no: int, key: bytearray) -> None:
        """AuthenticateEV2NonFirst (0x77): keeps TI and CmdCtr, new session keys."""
        if self.auth_mode != AuthMode.EV2:
            raise ProtocolUsageError("AuthenticateEV2NonFirst needs an EV2 session",
                                     command=command_name(Cmd.AUTHENTICATE_EV2_NON_FIRST))
        self._authenticate_ev2(Cmd.AUTHENTICATE_EV2_NON_FIRST, key_no, key)

    def _authenticate_ev2(self, code: Cmd, key_no: int, key: bytearray) -> None:
        name = command_name(code)
        first = code == Cmd.AUTHENTICATE_EV2_FIRST
        kept_ti, kept_ctr = self._channel.session.ti, self._channel.session.cmd_ctr
        self._begin_auth(name, key_no)

        def run() -> None:
            cipher = BlockCipher(key, KeyType.AES)
            zero = bytes(16)
            rnd_a = bytearray()
            try:
                params = bytes((key_no, 0x00)) if first else bytes((key_no,))  # LenCap = 0
                enc_b, _ = self._channel.exchange(code, params, name=name,
                                                  expected=(STATUS_ADDITIONAL_FRAME,), follow_chain=False)
                if len(enc_b) != 16:
                    raise ShortResponseError(f"{name}: encrypted RndB is {len(enc_b)} bytes, expected 16",
                                             command=name, sw=0x91AF)
                rnd_b = cipher.decrypt_cbc(zero, enc_b)
                rnd_a = bytearray(self._random(16))
                token = cipher.encrypt_cbc(zero, bytes(rnd_a) + rotate_left(rnd_b))
                answer, _ = self._channel.exchange(Cmd.ADDITIONAL_FRAME, token, name=name)
                want = 32 if first else 16
                if len(answer) != want:
                    raise ShortResponseError(f"{name}: card answer is {len(answer)} bytes, expected {want}",
                                             command=name, sw=0x9100)
                plain = cipher.decrypt_cbc(zero, answer)
                rnd_a_rot = plain[4:20] if first else plain[0:16]
                if rnd_a_rot != rotate_left(bytes(rnd_a)):
                    raise CryptogramError(f"{name}: the card's RndA' does not match; wrong key or not "
                                          "the expected card", command=name, sw=0x9100)
                s = self._channel.session
                s.ses_enc, s.ses_mac = ev2_session_keys(key, bytes(rnd_a), rnd_b)
                s.ti = plain[0:4] if first else kept_ti
                s.cmd_ctr = 0 if first else kept_ctr
                s.mode = AuthMode.EV2
                s.key_no = key_no
                s.key_type = KeyType.AES
                if first:
                    self.pd_cap2, self.pcd_cap2 = plain[20:26], plain[26:32]
            finally:
                wipe(rnd_a)
                cipher.wipe()

        self._auth_guard(name, run)

