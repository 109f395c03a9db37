"""The canonical form of an event and its HMAC: what the chain links and what verify recomputes."""
from __future__ import annotations

import datetime
import hashlib
import hmac
import json

CHAIN_FORMAT = 1
HASHED_FIELDS = (
    "sequence", "created_at", "actor_type", "actor_id", "actor_name", "request_id", "job_id",
    "tenant_id", "tenant_slug", "action", "result", "card_uid", "aid", "key_no", "key_version",
    "details", "prev_hash",
)


def _timestamp(value: datetime.datetime) -> str:
    # Always UTC with microseconds, whatever the database hands back.
    return value.astimezone(datetime.UTC).isoformat(timespec="microseconds")


def canonical_payload(fields: dict) -> bytes:
    """Sorted keys, no spaces, ASCII only: the same bytes on every writer and on verify."""
    payload = {name: fields[name] for name in HASHED_FIELDS}
    payload["created_at"] = _timestamp(payload["created_at"])
    payload["v"] = CHAIN_FORMAT
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")


def event_hash(key: bytes | bytearray, fields: dict) -> str:
    return hmac.new(key, canonical_payload(fields), hashlib.sha256).hexdigest()


def fields_of(event) -> dict:
    return {name: getattr(event, name) for name in HASHED_FIELDS}
