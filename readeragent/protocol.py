"""The job protocol between the CMS and a station's reader agent: envelope, sealed keys, result.

Both sides import this module (the CMS may import `readeragent`; `readeragent` never imports the
CMS). Everything that crosses Celery is a JSON-safe dict; nothing in it is a plain key.

Job envelope (the only Celery argument of `station.run_job`)::

    {"v": 1, "job_id": "<uuid>", "station": "<code>", "tenant": "<slug>",
     "issued_at": <unix s>, "expires_at": <unix s>,
     "card": {"uid": "<hex>", "chip_type": "desfire_ev2" | "jcop4" | ...,
              "kdd": "<hex>"},                  # optional: a JCOP card's 10-byte KDD, see below
     "script": {"version": 1, "steps": [<step>, ...]},
     "script_digest": "<sha256 hex of canonical(script)>",
     "sealed_keys": "<base64 HPKE ciphertext>",      # key refs -> key bytes, see seal_keys
     "signing_key_version": <int>,                   # CMS Ed25519 key version in Vault Transit
     "signature": "<base64 Ed25519 over canonical(envelope without 'signature')>"}

"card"."kdd" (additive, JCOP cards only) is the GP Key Diversification Data the CMS diversified the
ISD keys with: the monitor reads it with GET DATA 'CF' (no channel opened) and reports it as "kdd" in
the signed card_presented report; when the envelope carries it, the agent checks that the first 10
bytes of every INITIALIZE UPDATE answer equal it and refuses to send EXTERNAL AUTHENTICATE otherwise
(another chip was swapped in: error kind "KddMismatchError").

Sealed keys are HPKE (X25519, HKDF-SHA256, AES-128-GCM) to the station's enrolled X25519 public
key; the HPKE `info` binds them to job id, station and expiry, so a blob moved into another job,
to another station or past its expiry does not open.

Script steps are typed dicts, every one with "op"; keys are named by reference ("ref" strings that
are keys of the sealed map), never by value. The vocabulary is `STEP_FIELDS`. A step may carry
"confirms": {...} that the CMS uses to move its ledger when the card confirmed the step (the agent
copies it into the result untouched).

Result (the only argument of the CMS task `cms.job_result`)::

    {"v": 1, "job_id", "station", "state": "succeeded" | "failed" | "interrupted" | "refused",
     "steps": [{"index": i, "op": "...", "status": "done" | "failed" | "in_flight",
                "confirms": {...}, "observed": {...}}],
     "steps_done": n, "stage": "<op of the last step reached>",
     "error": {"step": i, "op": "...", "apdu": "<hex header>", "sw": "6982", "meaning": "...",
               "kind": "<exception class>", "message": "..."} | null,
     "trace": [{"step": i, "direction": "TX" | "RX", "apdu_hex": "...", "redacted": bool}],
     "started_at": <unix s>, "finished_at": <unix s>,
     "signature": "<base64 Ed25519 by the station over canonical(result without 'signature')>"}

A step is "in_flight" when its command (ChangeKey, PUT KEY) was sent and no answer came back: the
card may or may not hold the new key, so the CMS marks the card for a safe probe.

Additions used by the CMS side (cards/compiler.py, cards/services/ledger.py and results.py); all optional:

- "confirms" is {"key_version": <KeyVersion.id>} for a DESFire ChangeKey and
  {"key_versions": [<id ENC>, <id MAC>, <id DEK>]} for a GP PUT KEY (one key set, three versions).
- "label" names the effect of a step ("picc.0.change", "app.F0A001.1.change",
  "app.F0A001.file.1.data", "isd.put_key", "store_data.0", "lock", ...); the CMS uses labels
  of steps done to resume an interrupted card from the first effect not done. Probe steps are
  labelled "probe.<slot>" ("probe.picc.0", "probe.app.F0A001.0", "probe.isd").
- "observed" of a probe step: desfire.get_key_version -> {"key_version": <int the card answered>};
  gp.key_information -> {"kvns": [<every key version number the card lists>]};
  gp.get_status (scope "isd", in an open secure channel) -> {"life_cycle": <the ISD's = the card's
  life cycle byte, GP 2.3 11.4>} or {"refused_sw": "6985"} when the authenticated card refuses it
  (which proves no life cycle: the CMS quarantines the card as life_cycle_unknown); gp.get_status
  (scope "applications" or "load_files", labels "probe.registry.applications" / ".load_files") ->
  {"entries": n, "aids": [<each AID in hex>]} ([] on 6A88, nothing registered): the registry probe
  that settles an INSTALL / DELETE whose answer was lost;
  desfire.get_application_ids -> {"aids": [<each AID's 3 wire bytes as one big-endian int>]}
  (0xF0A001 for the step field "F0A001"); desfire.get_file_ids -> {"file_ids": [<file numbers>]}.
  Both list without authentication when the key settings allow free directory listing (bit 1 of
  the PICC / application key settings); the CMS probes with them a create whose answer was lost.
- A station report (most usefully "heartbeat") may carry "ips": [<the host's IP addresses as text,
  IPv4 or IPv6, at most 16>] (signed like every field; `host_addresses()` gives them). The CMS
  stores the first usable one (not loopback, link-local or unspecified) as the station's
  `last_ip`, which the alert rules compare with the networks the station may be seen from, and
  audits a change ("station.ip_changed").
- desfire.create_file of a value file may carry "free_get_value": true (GetValue, Debit and
  LimitedCredit need no authentication: the value file's option byte bit 1, next to
  limited_credit's bit 0).
- A "card_presented" report may carry "chip_type" ("desfire_ev1" | "desfire_ev2" | "desfire_ev3" |
  "jcop4") when the agent knows it (e.g. from DESFire GetVersion); the CMS otherwise takes the
  chip family of the order's profile.
- Key refs: "kv-<id>", "mkv-<id>-<role>" (role isd_enc / isd_mac / isd_dek / cmk derive per card;
  role "static" is the master key itself, e.g. a fixed transport key), "default-<key_type>".

Additions from the agent side (readeragent/executor.py; all optional to read):

- "error" also carries "authentication": true when an authentication failed (never retried), and
  for a "refused" result "reason": signature | station | expired | digest | malformed | replay |
  card (the card in the reader is not the job's, or none) | sealed | unknown_ref (a ref the
  sealed map lacks). A refused job touched no card.
- "observed": desfire.authenticate -> {"authenticated": true, "key_no"}; desfire.change_key ->
  {"acknowledged": true}; gp.put_key -> {"kcv_match": true, "kvn"}; gp.open_scp03/02 -> {"kvn"};
  gp.key_information -> also {"holds_expected": bool} with "expect_kvn" (an observation, never a
  failure: it is the probe). desfire.get_key_version with "expect" fails on another version.
- A key-changing step whose answer did not come or did not verify is "in_flight"; one the card
  refused with a status word is "failed" (the card kept its key).
- Field formats of the steps are listed in readeragent/executor.py's docstring.
"""
from __future__ import annotations

import base64
import hashlib
import json
import socket
import time
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

PROTOCOL_VERSION = 1
SCRIPT_VERSION = 1
SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_128_GCM)
MAX_KEYS_PER_JOB = 256
MAX_KEY_BYTES = 32

# op -> (required fields, optional fields). Fields named *key / keys hold refs, never bytes.
STEP_FIELDS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "select": (frozenset({"aid"}), frozenset()),
    "raw": (frozenset({"apdu"}), frozenset({"expect_sw", "redact"})),
    "gp.open_scp03": (frozenset({"keys", "kvn"}), frozenset({"security_level", "s16", "sd_aid"})),
    "gp.open_scp02": (frozenset({"keys", "kvn"}), frozenset({"security_level", "i"})),
    "gp.put_key": (frozenset({"keys", "kvn"}), frozenset({"replace_kvn"})),
    "gp.delete_key": (frozenset({"kvn"}), frozenset({"key_id"})),
    "gp.key_information": (frozenset(), frozenset({"expect_kvn"})),
    "gp.get_status": (frozenset({"scope"}), frozenset()),
    "gp.store_data": (frozenset({"dgi", "data_hex"}), frozenset({"redact"})),
    "gp.install": (frozenset({"package_aid", "module_aid", "aid"}),
                   frozenset({"privileges_hex", "params_hex"})),
    "gp.delete": (frozenset({"aid"}), frozenset()),
    "gp.set_status": (frozenset({"scope", "state"}), frozenset({"aid"})),
    "gp.lock_card": (frozenset(), frozenset()),
    "desfire.select_application": (frozenset({"aid"}), frozenset()),
    "desfire.authenticate": (frozenset({"key_no", "key", "key_type"}), frozenset({"mode"})),
    "desfire.get_key_version": (frozenset({"key_no"}), frozenset({"expect"})),
    "desfire.get_application_ids": (frozenset(), frozenset()),
    "desfire.get_file_ids": (frozenset(), frozenset()),
    "desfire.change_key": (frozenset({"key_no", "new_key", "new_version", "key_type"}),
                           frozenset({"old_key"})),
    "desfire.change_key_settings": (frozenset({"key_settings"}), frozenset()),
    "desfire.create_application": (frozenset({"aid", "key_settings", "num_keys", "key_type"}), frozenset()),
    "desfire.delete_application": (frozenset({"aid"}), frozenset()),
    "desfire.create_file": (frozenset({"file_no", "type", "comm_mode", "access"}),
                            frozenset({"size", "record_size", "max_records", "lower_limit", "upper_limit",
                                       "value", "limited_credit", "free_get_value"})),
    "desfire.write_data": (frozenset({"file_no", "data_hex"}), frozenset({"offset", "comm_mode"})),
    "desfire.write_record": (frozenset({"file_no", "data_hex"}), frozenset({"offset", "comm_mode"})),
    "desfire.credit": (frozenset({"file_no", "value"}), frozenset({"comm_mode"})),
    "desfire.commit": (frozenset(), frozenset()),
}
KEY_FIELDS = ("key", "new_key", "old_key", "keys")
STEP_META = frozenset({"op", "confirms", "label"})


class ProtocolError(Exception):
    """A job or result that must be refused: the message says why, never what a key is."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason  # a short code: signature, expired, station, replay, digest, sealed, malformed


def canonical(obj: Any) -> bytes:
    """Sorted keys, no spaces, ASCII: the same bytes on both sides for signing and digests."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")


def script_digest(script: Mapping) -> str:
    return hashlib.sha256(canonical(script)).hexdigest()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (ValueError, TypeError):
        raise ProtocolError("malformed", f"{what} is not base64") from None


def step_key_refs(step: Mapping) -> list[str]:
    """The key refs a step names (in "key", "new_key", "old_key" or the "keys" map)."""
    refs: list[str] = []
    for name in KEY_FIELDS:
        value = step.get(name)
        if isinstance(value, str):
            refs.append(value)
        elif isinstance(value, Mapping):
            refs.extend(v for v in value.values() if isinstance(v, str))
    return refs


def check_script(script: Any) -> list[str]:
    """Structural check of a script; returns every ref it names. Raises ProtocolError('malformed')."""
    if not isinstance(script, Mapping) or script.get("version") != SCRIPT_VERSION:
        raise ProtocolError("malformed", f"script must be an object with version {SCRIPT_VERSION}")
    steps = script.get("steps")
    if not isinstance(steps, list) or not steps:
        raise ProtocolError("malformed", "script.steps must be a non-empty list")
    refs: list[str] = []
    for index, step in enumerate(steps):
        if not isinstance(step, Mapping) or step.get("op") not in STEP_FIELDS:
            op = step.get("op") if isinstance(step, Mapping) else step
            raise ProtocolError("malformed", f"step {index}: unknown op {op!r}")
        required, optional = STEP_FIELDS[step["op"]]
        missing = required - step.keys()
        extra = step.keys() - required - optional - STEP_META
        if missing or extra:
            raise ProtocolError("malformed", f"step {index} ({step['op']}): missing {sorted(missing)}, "
                                             f"unexpected {sorted(extra)}")
        refs.extend(step_key_refs(step))
    return refs


# --- sealed keys --------------------------------------------------------------------------------

def seal_info(job_id: str, station: str, expires_at: int) -> bytes:
    return canonical({"purpose": "cms-job-keys", "v": PROTOCOL_VERSION, "job_id": job_id,
                      "station": station, "expires_at": expires_at})


def _pack(keys: Mapping[str, bytes | bytearray]) -> bytearray:
    if len(keys) > MAX_KEYS_PER_JOB:
        raise ProtocolError("malformed", f"too many keys for one job ({len(keys)})")
    out = bytearray()
    for ref in sorted(keys):
        name = ref.encode("ascii")
        key = keys[ref]
        if not 0 < len(name) < 256 or not 0 < len(key) <= MAX_KEY_BYTES:
            raise ProtocolError("malformed", f"key ref {ref!r} or its length is out of range")
        out += bytes([len(name)]) + name + bytes([len(key)])
        out += key
    return out


def _unpack(blob: bytearray) -> dict[str, bytearray]:
    keys: dict[str, bytearray] = {}
    i = 0
    try:
        while i < len(blob):
            n = blob[i]
            name = bytes(blob[i + 1:i + 1 + n]).decode("ascii")
            i += 1 + n
            k = blob[i]
            if not 0 < k <= MAX_KEY_BYTES or i + 1 + k > len(blob):
                raise ValueError
            keys[name] = bytearray(blob[i + 1:i + 1 + k])
            i += 1 + k
    except (IndexError, ValueError, UnicodeDecodeError):
        wipe_keys(keys)
        raise ProtocolError("sealed", "sealed key block is malformed") from None
    return keys


def seal_keys(keys: Mapping[str, bytes | bytearray], *, public_key: X25519PublicKey, job_id: str,
              station: str, expires_at: int) -> str:
    packed = _pack(keys)
    try:
        return b64(SUITE.encrypt(bytes(packed), public_key, seal_info(job_id, station, expires_at)))
    finally:
        packed[:] = bytes(len(packed))


def open_keys(sealed: str, *, private_key: X25519PrivateKey, job_id: str, station: str,
              expires_at: int) -> dict[str, bytearray]:
    """The job's keys as bytearrays (the caller wipes them with `wipe_keys`)."""
    ciphertext = unb64(sealed, "sealed_keys")
    try:
        plain = bytearray(SUITE.decrypt(ciphertext, private_key, seal_info(job_id, station, expires_at)))
    except (InvalidTag, ValueError):
        raise ProtocolError("sealed", "sealed keys do not open for this job, station and expiry") from None
    try:
        return _unpack(plain)
    finally:
        plain[:] = bytes(len(plain))


def wipe_keys(keys: Mapping[str, bytearray]) -> None:
    for key in keys.values():
        key[:] = bytes(len(key))


# --- signatures ---------------------------------------------------------------------------------

def signing_input(document: Mapping) -> bytes:
    return canonical({k: v for k, v in document.items() if k != "signature"})


def verify_signature(document: Mapping, public_key: Ed25519PublicKey, what: str) -> None:
    signature = document.get("signature")
    if not isinstance(signature, str):
        raise ProtocolError("signature", f"{what} is not signed")
    try:
        public_key.verify(unb64(signature, f"{what} signature"), signing_input(document))
    except InvalidSignature:
        raise ProtocolError("signature", f"{what} signature does not verify") from None


def sign_with(document: dict, private_key: Ed25519PrivateKey) -> dict:
    document = dict(document)
    document.pop("signature", None)
    document["signature"] = b64(private_key.sign(signing_input(document)))
    return document


def check_envelope(envelope: Any, *, station: str, cms_public_key: Ed25519PublicKey,
                   now: float | None = None, expiry: bool = True) -> None:
    """Everything the agent checks before it touches a card (except replay, which needs its ledger).

    `expiry=False` leaves the expiry out (the agent checks it after its replay ledger: a copy of a job
    already run is a replay, whatever the time; `check_expiry` then)."""
    if not isinstance(envelope, Mapping) or envelope.get("v") != PROTOCOL_VERSION:
        raise ProtocolError("malformed", f"job envelope must be an object with v={PROTOCOL_VERSION}")
    verify_signature(envelope, cms_public_key, "job")
    if envelope.get("station") != station:
        raise ProtocolError("station", f"job is for station {envelope.get('station')!r}, not {station!r}")
    if expiry or not isinstance(envelope.get("expires_at"), int):
        check_expiry(envelope, now)
    script = envelope.get("script")
    check_script(script)
    if script_digest(script) != envelope.get("script_digest"):
        raise ProtocolError("digest", "script digest does not match the script")


def check_expiry(envelope: Mapping, now: float | None = None) -> None:
    expires_at = envelope.get("expires_at")
    if not isinstance(expires_at, int) or (now if now is not None else time.time()) > expires_at:
        raise ProtocolError("expired", "job expired before it started")


def public_bytes_x25519(key: X25519PublicKey) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def public_bytes_ed25519(key: Ed25519PublicKey) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def host_addresses() -> list[str]:
    """This host's IP addresses for a heartbeat's "ips": the one routing outwards first (a UDP
    socket's connect sends nothing), then those its hostname resolves to; loopback left out."""
    found: list[str] = []
    for family, target in ((socket.AF_INET, ("192.0.2.1", 9)), (socket.AF_INET6, ("2001:db8::1", 9))):
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as probe:
                probe.connect(target)
                found.append(probe.getsockname()[0])
        except OSError:
            pass
    try:
        for *_, address in socket.getaddrinfo(socket.gethostname(), None):
            found.append(str(address[0]))
    except OSError:
        pass
    out: list[str] = []
    for ip in found:
        if ip not in out and not ip.startswith("127.") and ip != "::1":
            out.append(ip)
    return out[:16]
