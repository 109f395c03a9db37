"""The virtual NXP JCOP 4 card: APDU parsing, ISD dispatch, SCP02/SCP03 authentication, lockout, state."""
from __future__ import annotations

import json
import os
from collections.abc import Callable

from ..base import VirtualCard
from . import commands
from .commands import CardStatus
from .model import (
    CARD_LOCKED,
    ISD_AID,
    KEY_ID_DEK,
    KEY_ID_ENC,
    KEY_ID_MAC,
    KEY_TYPE_AES,
    KEY_TYPE_DES3,
    LIFE_CYCLE_NAMES,
    NVM_FREE_DEFAULT,
    OP_READY,
    TERMINATED,
    VOLATILE_FREE_DEFAULT,
    Application,
    Identity,
    KeySet,
    LoadFile,
    system_load_files,
)
from .scp import (
    C_DEC,
    C_MAC,
    I03_PSEUDO_RANDOM,
    I03_S16,
    Command,
    CryptogramMismatch,
    Scp02Session,
    Scp03Session,
    SecureMessagingError,
    pseudo_random_challenge,
    scp03_levels,
)

DEFAULT_KEY = bytes(range(0x40, 0x50))  # GP default test key 40..4F (seed 000)
DEFAULT_SCP03_KVN = 0x30
DEFAULT_SCP02_KVN = 0x20
MAX_FAILED_AUTHENTICATIONS = 10  # seed 000 gives no figure; the brief's default

# A bricked chip is dead silicon (seed 000). A real one goes mute; a mute virtual card would stall
# pcscd and every host in reader timeouts, so ours answers every APDU with 6F00 ("no precise
# diagnosis"): never 9000, never data, distinct from every answer a live card gives, and immediate.
SW_BRICKED = 0x6F00

KeyMaterial = bytes | bytearray | tuple[bytes | bytearray, bytes | bytearray, bytes | bytearray]


def _key_triplet(material: KeyMaterial) -> dict[int, bytearray]:
    if isinstance(material, tuple):
        enc, mac, dek = material
    else:
        enc = mac = dek = material
    return {KEY_ID_ENC: bytearray(enc), KEY_ID_MAC: bytearray(mac), KEY_ID_DEK: bytearray(dek)}


def parse_command(apdu: bytes) -> Command:
    """ISO 7816-3 cases 1 to 4, short and extended; anything else is 6700."""
    if len(apdu) < 4:
        raise CardStatus(0x6700, "APDU shorter than a header")
    cla, ins, p1, p2 = apdu[:4]
    body = apdu[4:]
    if not body:
        return Command(cla, ins, p1, p2, b"")
    if len(body) == 1:
        return Command(cla, ins, p1, p2, b"", le=body[0] or 256)
    if body[0] != 0:
        lc = body[0]
        if len(body) == 1 + lc:
            return Command(cla, ins, p1, p2, bytes(body[1:]), body[:1])
        if len(body) == 2 + lc:
            return Command(cla, ins, p1, p2, bytes(body[1:-1]), body[:1], le=body[-1] or 256)
        raise CardStatus(0x6700, "Lc does not match the data")
    if len(body) == 3:
        return Command(cla, ins, p1, p2, b"", le=int.from_bytes(body[1:], "big") or 65536)
    lc = int.from_bytes(body[1:3], "big")
    if lc and len(body) in (3 + lc, 5 + lc):
        le = (int.from_bytes(body[3 + lc:], "big") or 65536) if len(body) == 5 + lc else None
        return Command(cla, ins, p1, p2, bytes(body[3:3 + lc]), body[:3], le=le)
    raise CardStatus(0x6700, "malformed extended APDU")


class JCOP4Card(VirtualCard):
    """A JCOP 4 (P71) Java Card seen through its Issuer Security Domain.

    Keyword options: `seed` makes the identity (UID, CPLC serial and batch,
    KDD) deterministic; `scp03_keys`/`scp03_kvn`/`scp03_i` and
    `scp02_keys`/`scp02_kvn`/`scp02_i` give the factory key sets (None
    leaves a set out); `max_failed_authentications` is the lockout limit;
    `nvm_free`/`volatile_free` the free memory a fresh card reports;
    `sequence_counter` the SCP03 counter; `rng(n)` the random source for
    card challenges (tests inject it to replay published traces).
    """

    kind = "jcop4"
    # PC/SC part 3 ATR of an ISO 14443-4 card; the historical bytes ("JCOP4 cardsim") are ours.
    atr = bytes.fromhex("3B8D80014A434F5034206361726473696D6D")

    def __init__(
        self,
        *,
        seed: int | str | bytes | None = None,
        uid: bytes | None = None,
        kdd: bytes | None = None,
        isd_aid: bytes = ISD_AID,
        scp03_keys: KeyMaterial | None = DEFAULT_KEY,
        scp03_kvn: int = DEFAULT_SCP03_KVN,
        scp03_i: int = 0x70,
        scp02_keys: KeyMaterial | None = DEFAULT_KEY,
        scp02_kvn: int = DEFAULT_SCP02_KVN,
        scp02_i: int = 0x55,
        life_cycle: int = OP_READY,
        max_failed_authentications: int = MAX_FAILED_AUTHENTICATIONS,
        nvm_free: int = NVM_FREE_DEFAULT,
        volatile_free: int = VOLATILE_FREE_DEFAULT,
        sequence_counter: int = 0,
        scp02_sequence_counter: int = 0,
        rng: Callable[[int], bytes] | None = None,
    ) -> None:
        super().__init__()
        if scp03_i & I03_S16:
            raise ValueError("scp03_i: S16 is chosen per session by the host challenge length")
        if scp02_i not in (0x15, 0x55):
            raise ValueError("scp02_i: this card offers i=15 and i=55")
        if max_failed_authentications < 1:
            raise ValueError("max_failed_authentications must be at least 1")
        self.identity = Identity.make(seed, uid=uid, kdd=kdd)
        self.isd_aid = bytes(isd_aid)
        self.rng = rng or os.urandom
        self.scp03_i, self.scp02_i = scp03_i, scp02_i
        self.key_sets: dict[int, KeySet] = {}
        if scp03_keys is not None:
            self.key_sets[scp03_kvn] = KeySet(scp03_kvn, KEY_TYPE_AES, _key_triplet(scp03_keys), scp03_i)
        if scp02_keys is not None:
            keys = _key_triplet(scp02_keys)
            if any(len(key) != 16 for key in keys.values()):
                raise ValueError("SCP02 keys are 16-byte 3DES keys")
            self.key_sets[scp02_kvn] = KeySet(scp02_kvn, KEY_TYPE_DES3, keys, scp02_i)
        if not self.key_sets:
            raise ValueError("a card needs at least one key set")
        self.life_cycle = life_cycle
        self.max_failed_authentications = max_failed_authentications
        self.failed_authentications = 0
        self.bricked = False
        self.sequence_counter = sequence_counter
        self.scp02_sequence_counter = scp02_sequence_counter
        self.load_files: dict[bytes, LoadFile] = {lf.aid: lf for lf in system_load_files()}
        self.apps: dict[bytes, Application] = {}
        self.dgis: dict[int, bytes] = {}
        self.tlvs: dict[int, bytes] = {}
        self.volatile_free = volatile_free
        self.nvm_size = nvm_free + self.allocation()
        self.session: Scp03Session | Scp02Session | None = None
        self.power_on()

    # -- volatile state ---------------------------------------------------------------------------
    def power_on(self) -> None:
        self.close_session()
        self.selected: bytes = self.isd_aid
        self.store_buffer: bytearray | None = None
        self.store_next_block = 0
        self.pending_load: dict | None = None
        self.status_pending: list[bytes] = []

    def close_session(self) -> None:
        session = getattr(self, "session", None)
        if session is not None:
            session.close()
        self.session = None

    # -- memory -----------------------------------------------------------------------------------
    def allocation(self) -> int:
        keys = sum(key_set.allocation() for key_set in self.key_sets.values())
        content = sum(lf.size for lf in self.load_files.values()) + sum(a.size for a in self.apps.values())
        stored = sum(len(v) + 4 for v in self.dgis.values()) + sum(len(v) + 4 for v in self.tlvs.values())
        return keys + content + stored

    def free_memory(self) -> int:
        return self.nvm_size - self.allocation()

    def default_key_set(self) -> KeySet | None:
        complete = [ks for ks in self.key_sets.values() if ks.complete]
        # P1 00 = "first available key set": an SCP03 set before an SCP02 one, lowest KVN first
        complete.sort(key=lambda ks: (ks.protocol != 3, ks.kvn))
        return complete[0] if complete else None

    # -- APDU level -------------------------------------------------------------------------------
    def process(self, apdu: bytes) -> bytes:
        if self.bricked:
            return SW_BRICKED.to_bytes(2, "big")
        if apdu[:4] == b"\xff\xca\x00\x00":  # reader pseudo-APDU: the UID, as a PC/SC reader answers it
            return self.identity.uid + b"\x90\x00"
        try:
            data, sw = self._dispatch(parse_command(apdu))
        except CardStatus as status:
            data, sw = b"", status.sw
        return bytes(data) + sw.to_bytes(2, "big")

    def _dispatch(self, command: Command) -> tuple[bytes, int]:
        if command.cla & 0x10:
            raise CardStatus(0x6884, "command chaining is not supported")
        if command.cla & 0x03 or command.cla & 0x40:
            raise CardStatus(0x6881, "logical channels are not supported")
        if command.ins == 0xA4:
            return self._select(command)
        if self.selected != self.isd_aid:
            raise CardStatus(0x6D00, "the selected applet is registered, not run")
        if self.life_cycle == TERMINATED and command.ins != 0xCA:
            raise CardStatus(0x6985, "card TERMINATED: only GET DATA")
        if command.ins == 0x50:
            return self._initialize_update(command)
        if command.ins == 0x82:
            return self._external_authenticate(command)
        session = self.session
        if session is not None and not session.authenticated:
            # INITIALIZE UPDATE must be followed by EXTERNAL AUTHENTICATE; anything else abandons it
            self.close_session()
            session = None
        plain = command
        if command.cla & 0x04:
            if session is None or not session.level & C_MAC:
                self.close_session()
                raise CardStatus(0x6982, "secure messaging without a C-MAC session")
            try:
                data = session.unwrap(command)
            except SecureMessagingError as exc:
                self.close_session()
                raise CardStatus(0x6982, str(exc)) from None
            plain = Command(command.cla & ~0x04, command.ins, command.p1, command.p2, data, le=command.le)
        elif session is not None and session.level & C_MAC:
            # GP: a command below the session's security level is rejected and ends the session
            self.close_session()
            raise CardStatus(0x6982, "command without the C-MAC the session requires")
        try:
            data, sw = self._execute(plain, authenticated=session is not None)
        except CardStatus as status:
            data, sw = b"", status.sw
        if plain is not command and session is not None:
            data = session.wrap(data, sw)
            if self.life_cycle == TERMINATED:
                self.close_session()
        return data, sw

    def _execute(self, command: Command, *, authenticated: bool) -> tuple[bytes, int]:
        ins = command.ins
        handler = commands.HANDLERS.get(ins)
        if handler is None:
            raise CardStatus(0x6D00, f"INS {ins:02X}")
        if ins != 0xCA and not command.cla & 0x80:
            raise CardStatus(0x6E00, "GP commands use the proprietary class 80/84")
        if self.life_cycle == CARD_LOCKED and not (ins == 0xCA or commands.is_unlock_or_terminate(command)):
            raise CardStatus(0x6985, "card locked")
        if ins != 0xCA and not authenticated:
            raise CardStatus(0x6982, "needs an authenticated secure channel")
        if ins != 0xE2:
            self.store_buffer = None
        if ins not in (0xE6, 0xE8):
            self.pending_load = None
        if ins != 0xF2:
            self.status_pending = []
        return handler(self, command)

    # -- SELECT -----------------------------------------------------------------------------------
    def _select(self, command: Command) -> tuple[bytes, int]:
        if command.p1 != 0x04 or command.p2 & 0xF3:
            raise CardStatus(0x6A86, "only SELECT by name, first occurrence")
        # selecting anything ends the secure channel and any unfinished STORE DATA / LOAD
        self.close_session()
        self.store_buffer = None
        self.pending_load = None
        aid = command.data
        if not aid or self.isd_aid.startswith(aid):
            self.selected = self.isd_aid
            return commands.isd_fci(self), 0x9000
        app = self.apps.get(aid)
        if app is None or app.life_cycle & 0x80 or app.life_cycle & 0x07 != 0x07:
            raise CardStatus(0x6A82, "no selectable application with this AID")
        # GP 2.3 5.1.1.4: a CARD_LOCKED card only lets the application with the Final Application
        # privilege (byte 1, b2) be selected; a TERMINATED card none at all
        final_application = bool(app.privileges[0] & 0x02)
        if self.life_cycle == TERMINATED or (self.life_cycle == CARD_LOCKED and not final_application):
            raise CardStatus(0x6A82, "card locked: application not selectable")
        self.selected = aid
        return b"", 0x9000

    # -- authentication ---------------------------------------------------------------------------
    def _initialize_update(self, command: Command) -> tuple[bytes, int]:
        self.close_session()
        if not command.cla & 0x80 or command.cla & 0x04:
            raise CardStatus(0x6E00, "INITIALIZE UPDATE is CLA 80")
        if command.p2 != 0:
            raise CardStatus(0x6A86, "key identifier must be 00")
        key_set = self.default_key_set() if command.p1 == 0 else self.key_sets.get(command.p1)
        if key_set is None or not key_set.complete:
            raise CardStatus(0x6A88, "no such key set")
        host_challenge = command.data
        kdd, kvn = self.identity.kdd, key_set.kvn
        if key_set.protocol == 2:
            if len(host_challenge) != 8:
                raise CardStatus(0x6700, "SCP02 host challenge is 8 bytes")
            # i=55 derives its challenge on real cards; no published vector pins that derivation down,
            # so both i=15 and i=55 draw it from the card's random source.
            card_challenge = self.rng(6)
            counter = (self.scp02_sequence_counter & 0xFFFF).to_bytes(2, "big")
            enc, mac, dek = (key_set.keys[key_id] for key_id in (KEY_ID_ENC, KEY_ID_MAC, KEY_ID_DEK))
            session = Scp02Session(enc, mac, dek, kvn=kvn, host_challenge=host_challenge,
                                   card_challenge=card_challenge, sequence_counter=counter, i=key_set.scp_i)
            self.session = session
            answer = kdd + bytes((kvn, 0x02)) + counter + card_challenge + session.card_cryptogram
            return answer, 0x9000
        if len(host_challenge) not in (8, 16):
            raise CardStatus(0x6700, "SCP03 host challenge is 8 (S8) or 16 (S16) bytes")
        size = len(host_challenge)
        i = key_set.scp_i | (I03_S16 if size == 16 else 0)
        counter = b""
        if i & I03_PSEUDO_RANDOM:
            if self.sequence_counter >= 0xFFFFFF:
                raise CardStatus(0x6985, "sequence counter exhausted")
            counter = self.sequence_counter.to_bytes(3, "big")
            card_challenge = pseudo_random_challenge(key_set.keys[KEY_ID_ENC], counter, self.isd_aid, size)
            # every challenge is used once: the counter moves on each INITIALIZE UPDATE, success or not
            self.sequence_counter += 1
        else:
            card_challenge = self.rng(size)
        session = Scp03Session(key_set.keys[KEY_ID_ENC], key_set.keys[KEY_ID_MAC], key_set.keys[KEY_ID_DEK],
                               kvn=kvn, host_challenge=host_challenge, card_challenge=card_challenge, i=i)
        self.session = session
        answer = kdd + bytes((kvn, 0x03, i)) + card_challenge + session.card_cryptogram + counter
        return answer, 0x9000

    def _external_authenticate(self, command: Command) -> tuple[bytes, int]:
        session = self.session
        if session is None or session.authenticated:
            self.close_session()
            raise CardStatus(0x6985, "EXTERNAL AUTHENTICATE without INITIALIZE UPDATE")
        if command.cla != 0x84 or command.p2 != 0:
            self.close_session()
            raise CardStatus(0x6A86 if command.p2 else 0x6E00, "EXTERNAL AUTHENTICATE is 84 82 <level> 00")
        allowed = scp03_levels(session.i) if session.protocol == 3 else (0x00, C_MAC, C_MAC | C_DEC)
        if command.p1 not in allowed:
            self.close_session()
            raise CardStatus(0x6A86, f"security level {command.p1:02X} not offered")
        try:
            session.external_authenticate(command)
        except SecureMessagingError as exc:
            self.close_session()
            self.failed_authentications += 1
            if self.failed_authentications >= self.max_failed_authentications:
                self.bricked = True
            sw = 0x6300 if isinstance(exc, CryptogramMismatch) else 0x6982
            return b"", sw
        self.failed_authentications = 0
        if session.protocol == 2:
            self.scp02_sequence_counter = (self.scp02_sequence_counter + 1) & 0xFFFF
        return b"", 0x9000

    # -- test support -----------------------------------------------------------------------------
    def keys_held(self) -> dict[str, list[dict]]:
        """Which key versions the ISD holds, with KCVs (never key bytes), for tests and the CLI."""
        out = []
        for kvn in sorted(self.key_sets):
            key_set = self.key_sets[kvn]
            for key_id in sorted(key_set.keys):
                out.append({"kvn": kvn, "key_id": key_id, "scp": f"{key_set.protocol:02d}",
                            "type": "aes" if key_set.key_type == KEY_TYPE_AES else "des3",
                            "length": len(key_set.keys[key_id]), "kcv": key_set.kcv(key_id).hex()})
        return {self.isd_aid.hex(): out}

    # -- persistence ------------------------------------------------------------------------------
    def to_state(self) -> dict:
        return {
            "identity": self.identity.to_state(),
            "isd_aid": self.isd_aid.hex(),
            "life_cycle": self.life_cycle,
            "key_sets": [self.key_sets[kvn].to_state() for kvn in sorted(self.key_sets)],
            "scp03_i": self.scp03_i,
            "scp02_i": self.scp02_i,
            "sequence_counter": self.sequence_counter,
            "scp02_sequence_counter": self.scp02_sequence_counter,
            "failed_authentications": self.failed_authentications,
            "max_failed_authentications": self.max_failed_authentications,
            "bricked": self.bricked,
            "nvm_size": self.nvm_size,
            "volatile_free": self.volatile_free,
            "load_files": [lf.to_state() for lf in self.load_files.values()],
            "apps": [app.to_state() for app in self.apps.values()],
            "dgis": {f"{tag:04X}": value.hex() for tag, value in sorted(self.dgis.items())},
            "tlvs": {f"{tag:X}": value.hex() for tag, value in sorted(self.tlvs.items())},
        }

    def load_state(self, state: dict) -> None:
        self.close_session()
        for key_set in getattr(self, "key_sets", {}).values():
            key_set.wipe()
        self.identity = Identity.from_state(state["identity"])
        self.isd_aid = bytes.fromhex(state["isd_aid"])
        self.life_cycle = state["life_cycle"]
        self.key_sets = {ks["kvn"]: KeySet.from_state(ks) for ks in state["key_sets"]}
        self.scp03_i, self.scp02_i = state["scp03_i"], state["scp02_i"]
        self.sequence_counter = state["sequence_counter"]
        self.scp02_sequence_counter = state["scp02_sequence_counter"]
        self.failed_authentications = state["failed_authentications"]
        self.max_failed_authentications = state["max_failed_authentications"]
        self.bricked = state["bricked"]
        self.nvm_size = state["nvm_size"]
        self.volatile_free = state["volatile_free"]
        self.load_files = {lf.aid: lf for lf in map(LoadFile.from_state, state["load_files"])}
        self.apps = {app.aid: app for app in map(Application.from_state, state["apps"])}
        self.dgis = {int(tag, 16): bytes.fromhex(value) for tag, value in state["dgis"].items()}
        self.tlvs = {int(tag, 16): bytes.fromhex(value) for tag, value in state["tlvs"].items()}
        self.power_on()

    @classmethod
    def from_state(cls, state: dict) -> JCOP4Card:
        card = cls()
        card.load_state(state)
        return card

    def to_json(self) -> str:
        return json.dumps({"kind": self.kind, **self.to_state()}, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> JCOP4Card:
        return cls.from_state(json.loads(text))

    def __repr__(self) -> str:
        life = LIFE_CYCLE_NAMES.get(self.life_cycle, f"{self.life_cycle:02X}")
        return (f"JCOP4Card(uid={self.identity.uid.hex()}, life_cycle={life}, kvns={sorted(self.key_sets)}, "
                f"bricked={self.bricked})")

