"""Signed roll of the CMS job-signing key to an enrolled station, without re-enrolment.

The CMS rotates its Ed25519 job-signing key in Vault Transit (a new version). It then sends every
approved station, on its own queue, a key-roll message (Celery task `station.key_roll`, one argument)::

    {"v": 1, "type": "key_roll", "roll_id": "<uuid>", "station": "<code>", "issued_at": <unix s>,
     "new_version": <int>, "new_public_key": "<hex, raw Ed25519>",
     "retire_below": <int>,                 # optional: forget the versions below this one
     "signing_key_version": <int>,          # a version the station already pinned (the CMS signs the
     "signature": "<base64 Ed25519>"}       # roll with the one the station last acknowledged)

The station checks it with a key it already trusts (never with the key the message brings), that it
is for this station, that its roll id is new and that it moves forward (a version below the newest
pinned one that is not pinned, or a pinned version with another public key, is refused); then it
pins the new version in its identity file (0600, written atomically) and from then on accepts jobs
signed by any pinned version. It answers with a signed result (CMS task `cms.key_roll_result`)::

    {"v": 1, "type": "key_roll_result", "roll_id", "station", "state": "pinned" | "refused",
     "new_version", "pinned_versions": [<int>, ...], "reason": "<code>" | "", "message": "...",
     "at": <unix s>, "signature": "<base64 Ed25519 by the station>"}

The CMS signs a station's jobs with the newest version that station acknowledged, so a rotation never
leaves a station refusing jobs: until its answer arrives it keeps getting jobs signed with the version
it already trusts. "retire_below" lets the CMS tell a station that older versions are no longer used.

Refusal reasons: malformed | signature (unknown version or a signature that does not verify) | station
(another station's roll) | replay (a roll id already seen) | rollback (an older version, or another key
for a pinned version) | unavailable (the identity file could not be written; nothing pinned).
"""
from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from . import protocol
from .identity import Identity

log = logging.getLogger(__name__)

KEY_ROLL = "station.key_roll"
KEY_ROLL_RESULT = "cms.key_roll_result"
ROLL_FIELDS = frozenset({"v", "type", "roll_id", "station", "issued_at", "new_version", "new_public_key",
                         "retire_below", "signing_key_version", "signature"})
_HEX_KEY = re.compile(r"^[0-9a-f]{64}$")
_ROLL_ID = re.compile(r"^[0-9a-fA-F-]{8,64}$")


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_key_roll(document: Any, identity: Identity) -> tuple[int, str, int | None]:
    """(new version, its public key hex, retire_below or None) of an authentic roll for this station.

    Raises protocol.ProtocolError(reason) otherwise; nothing is changed here."""
    if not isinstance(document, Mapping) or document.get("v") != protocol.PROTOCOL_VERSION \
            or document.get("type") != "key_roll":
        raise protocol.ProtocolError("malformed", "a key roll is an object with v=1 and type key_roll")
    version = document.get("signing_key_version")
    trusted = identity.cms_public_key(version) if _int(version) else None
    if trusted is None:
        raise protocol.ProtocolError("signature", f"key roll signed with CMS key version {version!r}; this "
                                     f"station trusts versions {sorted(identity.cms_signing_keys)}")
    protocol.verify_signature(document, trusted, "key roll")
    if document.get("station") != identity.station:
        raise protocol.ProtocolError("station", f"key roll is for station {document.get('station')!r}, "
                                     f"not {identity.station!r}")
    extra = document.keys() - ROLL_FIELDS
    roll_id, new_version = document.get("roll_id"), document.get("new_version")
    public_hex, retire = document.get("new_public_key"), document.get("retire_below")
    if extra or not (isinstance(roll_id, str) and _ROLL_ID.match(roll_id)) or not _int(new_version) \
            or new_version < 1 or not (isinstance(public_hex, str) and _HEX_KEY.match(public_hex)) \
            or not (retire is None or (_int(retire) and 1 <= retire <= new_version)):
        raise protocol.ProtocolError("malformed", f"key roll fields are not the expected ones"
                                     f"{f' (unexpected {sorted(extra)})' if extra else ''}")
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_hex))
    except ValueError:
        raise protocol.ProtocolError("malformed", "new_public_key is not an Ed25519 public key") from None
    if roll_id in identity.key_rolls_seen:
        raise protocol.ProtocolError("replay", f"key roll {roll_id} was already received by this station")
    pinned = identity.cms_signing_keys.get(new_version)
    if pinned is not None and pinned != public_hex:
        raise protocol.ProtocolError("rollback", f"CMS key version {new_version} is pinned with another "
                                     "public key")
    if pinned is None and identity.cms_signing_keys and new_version < max(identity.cms_signing_keys):
        raise protocol.ProtocolError("rollback", f"CMS key version {new_version} is older than the newest "
                                     f"pinned ({max(identity.cms_signing_keys)})")
    return new_version, public_hex, retire


def apply_key_roll(document: Any, identity: Identity, home: Path, now: float | None = None) -> dict:
    """Check a key roll, pin its version (identity file first, then the identity in memory, so a job
    checked after this uses it) and return the signed answer for the CMS."""
    roll_id = document.get("roll_id") if isinstance(document, Mapping) else None
    new_version = document.get("new_version") if isinstance(document, Mapping) else None
    answer = {"v": protocol.PROTOCOL_VERSION, "type": "key_roll_result",
              "roll_id": roll_id if isinstance(roll_id, str) else None, "station": identity.station,
              "new_version": new_version if _int(new_version) else None}
    try:
        version, public_hex, retire = check_key_roll(document, identity)
        keys = {**identity.cms_signing_keys, version: public_hex}
        if retire is not None:
            keys = {k: v for k, v in keys.items() if k >= retire}
        seen = [*identity.key_rolls_seen, roll_id][-Identity.KEY_ROLLS_KEPT:]
        try:
            identity.saved_with(home, cms_signing_keys=keys, key_rolls_seen=seen)
        except OSError as exc:
            raise protocol.ProtocolError("unavailable", f"the identity file could not be written "
                                         f"({exc.__class__.__name__}); nothing pinned") from None
        answer.update(state="pinned", reason="", message="")
        log.warning("CMS job-signing key version %s pinned (roll %s); trusted versions now %s", version,
                    roll_id, sorted(keys))
    except protocol.ProtocolError as exc:
        answer.update(state="refused", reason=exc.reason, message=str(exc)[:300])
        log.warning("key roll %s refused: %s (%s)", roll_id, exc.reason, exc)
    answer["pinned_versions"] = sorted(identity.cms_signing_keys)
    answer["at"] = int(now if now is not None else time.time())
    return protocol.sign_with(answer, identity.sign_private_key)
