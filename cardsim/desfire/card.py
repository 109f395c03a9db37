"""The virtual MIFARE DESFire EV1/EV2/EV3 card: ISO 7816 wrapping, 0xAF chaining, authentication, dispatch."""
from __future__ import annotations

import math
import os
from collections.abc import Callable

from ..base import VirtualCard
from . import files, picc
from .crypto import (
    AES,
    DES,
    KEY_LENGTH,
    S_AES,
    TK3DES,
    auth_algorithm,
    auth_key_bytes,
    block_size,
    cbc_decrypt,
    cbc_encrypt,
    ev1_session_key,
    ev2_session_keys,
    legacy_receive,
    legacy_send,
    rotate_left,
)
from .model import PICC_AID, Application, Key, app_from_state, app_to_state
from .session import D40Channel, DESFireStatus, EV1Channel, EV2Channel, NoChannel

FLAVOURS = ("ev1", "ev2", "ev3")
# GetVersion hardware/software major versions (EV1 0x01, EV2 0x12, EV3 0x33), as
# public tools (Proxmark3 `hf mfdes info`) use them to tell the generations apart.
_VERSION = {"ev1": (0x01, 0x00, 0x01, 0x04), "ev2": (0x12, 0x00, 0x02, 0x01), "ev3": (0x33, 0x00, 0x03, 0x00)}
_DEFAULT_MEMORY = {"ev1": 4096, "ev2": 8192, "ev3": 8192}

AUTH_LEGACY, AUTH_ISO, AUTH_AES, AUTH_EV2_FIRST, AUTH_EV2_NON_FIRST = 0x0A, 0x1A, 0xAA, 0x71, 0x77
ADDITIONAL_FRAME = 0xAF


class DESFireCard(VirtualCard):
    """A DESFire card answering native commands wrapped in ISO 7816 (CLA 0x90, SW1 0x91).

    `rng(n) -> bytes` is the card's random source (RndB, TI); tests inject it to
    replay published examples. `picc_key`/`picc_key_type` set the PICC master
    key (default: all-zero transport key, AES on EV2/EV3, 2K3DES on EV1).
    """

    atr = bytes.fromhex("3B8180018080")  # PC/SC part 3 ATR of an ISO 14443-4 type A card

    def __init__(
        self,
        flavour: str = "ev2",
        uid: bytes | None = None,
        picc_key: bytes | None = None,
        picc_key_type: str | None = None,
        *,
        picc_key_version: int = 0,
        memory_size: int | None = None,
        rng: Callable[[int], bytes] | None = None,
        frame_size: int = 59,
        batch: bytes = bytes.fromhex("BA7C4E5A01"),
        production: bytes = bytes.fromhex("0125"),
    ) -> None:
        super().__init__()
        if flavour not in FLAVOURS:
            raise ValueError(f"unknown DESFire flavour {flavour!r}")
        self.flavour = flavour
        self.kind = f"desfire-{flavour}"
        self.uid = bytes(uid) if uid is not None else b"\x04" + os.urandom(6)
        if len(self.uid) != 7:
            raise ValueError("a DESFire UID has 7 bytes")
        self.memory_size = memory_size or _DEFAULT_MEMORY[flavour]
        self.rng = rng or os.urandom
        self.frame_size = frame_size
        self.batch, self.production = bytes(batch), bytes(production)
        family = picc_key_type or (DES if flavour == "ev1" else AES)
        key = Key(family, bytearray(picc_key if picc_key is not None else bytes(KEY_LENGTH[family])), 0)
        if family == AES:
            key.aes_version = picc_key_version
        self.picc = Application(PICC_AID, 0x0F, family, [key])
        self.apps: dict[bytes, Application] = {}
        self.power_on()

    # -- volatile state -----------------------------------------------------
    def power_on(self) -> None:
        for app in getattr(self, "apps", {}).values():
            app.discard_pending()
        self._drop_session()
        self.selected: Application = self.picc
        self._auth: dict | None = None
        self._out: bytes = b""
        self._sizes: list[int] = []
        self._in: tuple[int, bytes, int] | None = None

    def _drop_session(self) -> None:
        channel = getattr(self, "channel", None)
        if channel is not None:
            channel.close()
        self.channel = NoChannel()

    # -- helpers the command modules use -------------------------------------
    def app_by_aid(self, aid: bytes) -> Application | None:
        return self.picc if aid == PICC_AID else self.apps.get(aid)

    def authenticated_key(self) -> int | None:
        """The key number authenticated in the selected application, if any."""
        if self.channel.key_no is None or self.channel.aid != self.selected.aid:
            return None
        return self.channel.key_no

    def free_memory(self) -> int:
        return self.memory_size - sum(app.allocation() for app in self.apps.values())

    def discard_transaction(self) -> None:
        self.selected.discard_pending()

    def select(self, app: Application) -> None:
        self.discard_transaction()
        self._drop_session()
        self.selected = app

    def version_frames(self) -> bytes:
        hw_major, hw_minor, sw_major, sw_minor = _VERSION[self.flavour]
        storage = int(math.log2(self.memory_size)) * 2
        hw = bytes((0x04, 0x01, 0x01, hw_major, hw_minor, storage, 0x05))
        sw = bytes((0x04, 0x01, 0x01, sw_major, sw_minor, storage, 0x05))
        return hw + sw + self.uid + self.batch + self.production

    # -- APDU level ------------------------------------------------------------
    def process(self, apdu: bytes) -> bytes:
        if apdu[:4] == b"\xff\xca\x00\x00":  # reader pseudo-APDU: the UID, as a PC/SC reader answers it
            return self.uid + b"\x90\x00"
        if len(apdu) < 4:
            return b"\x67\x00"
        if apdu[0] != 0x90:
            return b"\x6e\x00"
        if apdu[2] or apdu[3]:
            return b"\x91\x9e"
        data = b""
        if len(apdu) > 5:
            lc = apdu[4]
            data = apdu[5 : 5 + lc]
            if len(data) != lc:
                return b"\x67\x00"
        try:
            payload, status = self._native(apdu[1], data)
        except DESFireStatus as status_error:
            # Every error ends the authentication (and its secure channel), as on the real card.
            self._auth = None
            self._out = b""
            self._in = None
            self._drop_session()
            return bytes((0x91, status_error.code))
        return payload + bytes((0x91, status))

    def _native(self, ins: int, data: bytes) -> tuple[bytes, int]:
        if ins == ADDITIONAL_FRAME:
            if self._auth is not None:
                return self._auth_step2(data), 0x00
            if self._out:
                return self._next_frame()
            if self._in is not None:
                chained_ins, so_far, expected = self._in
                so_far += data
                if len(so_far) < expected:
                    self._in = (chained_ins, so_far, expected)
                    return b"", ADDITIONAL_FRAME
                self._in = None
                return self._execute(chained_ins, so_far)
            raise DESFireStatus(0x1C, "nothing to continue")
        self._auth = None
        self._out = b""
        self._in = None
        if ins in (AUTH_LEGACY, AUTH_ISO, AUTH_AES, AUTH_EV2_FIRST, AUTH_EV2_NON_FIRST):
            return self._auth_step1(ins, data), ADDITIONAL_FRAME
        expected = files.expected_length(self, ins, data)
        if expected is not None and len(data) < expected:
            self._in = (ins, data, expected)
            return b"", ADDITIONAL_FRAME
        return self._execute(ins, data)

    def _execute(self, ins: int, data: bytes) -> tuple[bytes, int]:
        handler = picc.HANDLERS.get(ins) or files.HANDLERS.get(ins)
        if handler is None:
            raise DESFireStatus(0x1C, f"INS {ins:02X}")
        result = handler(self, ins, data)
        first_frames: list[int] = []
        if isinstance(result, tuple):
            result, first_frames = result
        self._out = result
        # GetVersion answers in fixed parts (7, 7, rest); other answers in frame_size pieces.
        self._sizes = first_frames
        return self._next_frame()

    def _next_frame(self) -> tuple[bytes, int]:
        size = self._sizes.pop(0) if self._sizes else self.frame_size
        frame, self._out = self._out[:size], self._out[size:]
        if self._out:
            return frame, ADDITIONAL_FRAME
        return frame, 0x00

    # -- authentication ----------------------------------------------------------
    def _auth_step1(self, ins: int, data: bytes) -> bytes:
        if not data:
            raise DESFireStatus(0x7E, "no key number")
        key_no = data[0] & 0x0F if self.selected is self.picc else data[0]
        app = self.selected
        previous = self.channel
        if ins == AUTH_EV2_NON_FIRST and not isinstance(previous, EV2Channel):
            raise DESFireStatus(0xAE, "NonFirst without an EV2 session")
        if ins in (AUTH_EV2_FIRST, AUTH_EV2_NON_FIRST) and self.flavour == "ev1":
            raise DESFireStatus(0x1C, "EV2 authentication on EV1")
        keep = (previous.ti, previous.cmd_ctr) if ins == AUTH_EV2_NON_FIRST else None
        # Starting an authentication ends the current one and any open transaction.
        self.discard_transaction()
        self._drop_session()
        if key_no >= len(app.keys):
            raise DESFireStatus(0x40, "no such key")
        key = app.keys[key_no]
        algorithm = auth_algorithm(key.family, key.value)
        allowed = {
            AUTH_LEGACY: key.family == DES,
            AUTH_ISO: key.family in (DES, TK3DES),
            AUTH_AES: key.family == AES,
            AUTH_EV2_FIRST: key.family == AES,
            AUTH_EV2_NON_FIRST: key.family == AES,
        }[ins]
        if not allowed:
            raise DESFireStatus(0xAE, "key type does not fit this authentication")
        secret = bytearray(auth_key_bytes(key.family, key.value))
        bs = block_size(algorithm)
        rnd_b = self.rng(16 if algorithm in (S_AES, "3k3des") else 8)
        if ins == AUTH_LEGACY:
            challenge = legacy_send(algorithm, secret, rnd_b)
        else:
            challenge = cbc_encrypt(algorithm, secret, bytes(bs), rnd_b)
        self._auth = {
            "ins": ins, "key_no": key_no, "algorithm": algorithm, "key": secret, "rnd_b": rnd_b,
            "iv": challenge[-bs:], "keep": keep,
            "pcd_cap": data[2 : 2 + data[1]] if ins == AUTH_EV2_FIRST and len(data) > 1 else b"",
        }
        return challenge

    def _auth_step2(self, data: bytes) -> bytes:
        state, self._auth = self._auth, None
        ins, algorithm, secret, rnd_b = state["ins"], state["algorithm"], state["key"], state["rnd_b"]
        n = len(rnd_b)
        bs = block_size(algorithm)
        try:
            if len(data) != 2 * n:
                raise DESFireStatus(0x7E, "authentication answer length")
            if ins == AUTH_LEGACY:
                plain = legacy_receive(algorithm, secret, data)
            elif ins in (AUTH_EV2_FIRST, AUTH_EV2_NON_FIRST):
                plain = cbc_decrypt(algorithm, secret, bytes(bs), data)
            else:
                plain = cbc_decrypt(algorithm, secret, state["iv"], data)
            rnd_a, rnd_b_rotated = plain[:n], plain[n:]
            if rnd_b_rotated != rotate_left(rnd_b):
                raise DESFireStatus(0xAE, "wrong RndB'")
            aid = self.selected.aid
            key_no = state["key_no"]
            if ins == AUTH_LEGACY:
                answer = legacy_send(algorithm, secret, rotate_left(rnd_a))
                self.channel = D40Channel(algorithm, ev1_session_key(algorithm, rnd_a, rnd_b), key_no, aid)
            elif ins in (AUTH_ISO, AUTH_AES):
                answer = cbc_encrypt(algorithm, secret, data[-bs:], rotate_left(rnd_a))
                self.channel = EV1Channel(algorithm, ev1_session_key(algorithm, rnd_a, rnd_b), key_no, aid)
            else:
                enc, mac = ev2_session_keys(secret, rnd_a, rnd_b)
                if ins == AUTH_EV2_FIRST:
                    ti, ctr = self.rng(4), 0
                    pcd_cap = (state["pcd_cap"] + bytes(6))[:6]
                    plain = ti + rotate_left(rnd_a) + bytes(6) + pcd_cap
                    answer = cbc_encrypt(algorithm, secret, bytes(16), plain)
                else:
                    ti, ctr = state["keep"]
                    answer = cbc_encrypt(algorithm, secret, bytes(16), rotate_left(rnd_a))
                self.channel = EV2Channel(enc, mac, ti, ctr, key_no, aid)
            return answer
        finally:
            secret[:] = bytes(len(secret))

    # -- test support --------------------------------------------------------------
    def inject_ev2_session(self, *, enc: bytes, mac: bytes, ti: bytes, cmd_ctr: int, key_no: int) -> None:
        """Put the card in an EV2 session given by a published example (known-answer tests only)."""
        self._drop_session()
        self.channel = EV2Channel(enc, mac, ti, cmd_ctr, key_no, self.selected.aid)

    # -- persistence -------------------------------------------------------------------
    def to_state(self) -> dict:
        return {
            "flavour": self.flavour,
            "uid": self.uid.hex(),
            "memory_size": self.memory_size,
            "picc": app_to_state(self.picc),
            "apps": [app_to_state(app) for app in self.apps.values()],
        }

    def load_state(self, state: dict) -> None:
        self.flavour = state["flavour"]
        self.kind = f"desfire-{self.flavour}"
        self.uid = bytes.fromhex(state["uid"])
        self.memory_size = state["memory_size"]
        self.picc = app_from_state(state["picc"])
        self.apps = {}
        for app_state in state["apps"]:
            app = app_from_state(app_state)
            self.apps[app.aid] = app
        self.power_on()

    @classmethod
    def from_state(cls, state: dict) -> DESFireCard:
        card = cls(state["flavour"], uid=bytes.fromhex(state["uid"]))
        card.load_state(state)
        return card

    def keys_held(self) -> dict[str, list[dict]]:
        """Which key families and versions the card holds per AID (hex), for tests and the CLI."""
        return {
            app.aid.hex(): [
                {"key_no": key_no, "family": key.family, "version": key.version}
                for key_no, key in enumerate(app.keys)
            ]
            for app in (self.picc, *self.apps.values())
        }

    def __repr__(self) -> str:
        return f"DESFireCard(flavour={self.flavour!r}, uid={self.uid.hex()}, apps={len(self.apps)})"
