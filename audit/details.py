"""Makes an event's details safe to keep forever: JSON only, no bytes, nothing named like a secret.

Bytes values and values under a name that looks like a key, secret, token or password are
replaced by a marker and their paths listed under `_redacted`, so the event still says that
something was left out. Names that describe a key without being one (`key_no`, `key_version`,
`kcv`, `token_prefix`, ...) are kept.
"""
from __future__ import annotations

import datetime
import decimal
import functools
import re
import uuid
from typing import Any

from audit.errors import AuditDetailsError

REDACTED = "[redacted]"
REDACTED_LIST_KEY = "_redacted"

_SENSITIVE_WORDS = {
    "key", "keys", "secret", "secrets", "token", "tokens", "password", "passwords", "passwd",
    "passphrase", "pin", "pins", "puk", "kek", "cmk", "amk", "dek", "plaintext", "private",
    "credential", "credentials", "authorization", "cookie", "sessionid", "seed",
}
# A name whose last word is one of these describes a secret without holding it.
_METADATA_WORDS = {
    "no", "number", "num", "nr", "version", "versions", "kvn", "id", "ids", "ref", "reference", "slot",
    "slots", "kcv", "fingerprint", "name", "names", "label", "prefix", "type", "types", "policy",
    "state", "status", "count", "usage", "path", "index", "length", "len", "size", "set", "role",
    "expires", "expiry", "at", "campaign", "algorithm", "alg", "scheme", "purpose", "owner",
}
_SPLIT = re.compile(r"[^a-z0-9]+")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


@functools.lru_cache(maxsize=4096)  # a pure function of a few dozen distinct names, asked for every event
def name_is_sensitive(name: str) -> bool:
    words = [w for w in _SPLIT.split(_CAMEL.sub("_", str(name)).lower()) if w]
    if not words or words[-1] in _METADATA_WORDS:
        return False
    return any(w in _SENSITIVE_WORDS for w in words)


def sanitize_details(details: dict | None) -> dict:
    """A JSON-safe copy of `details` with secrets and bytes removed (see module docstring)."""
    if details is None:
        return {}
    if not isinstance(details, dict):
        raise AuditDetailsError("details must be a dict")
    redacted: list[str] = []
    clean = _clean(details, "", redacted)
    if redacted:
        clean[REDACTED_LIST_KEY] = redacted
    return clean


def _clean(value: Any, path: str, redacted: list[str]) -> Any:
    if isinstance(value, dict):
        out = {}
        for raw_name, item in value.items():
            name = str(raw_name)
            child = f"{path}.{name}" if path else name
            if name_is_sensitive(name) or isinstance(item, bytes | bytearray | memoryview):
                out[name] = REDACTED
                redacted.append(child)
            else:
                out[name] = _clean(item, child, redacted)
        return out
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=repr) if isinstance(value, set | frozenset) else value
        out_list = []
        for index, item in enumerate(items):
            child = f"{path}[{index}]"
            if isinstance(item, bytes | bytearray | memoryview):
                out_list.append(REDACTED)
                redacted.append(child)
            else:
                out_list.append(_clean(item, child, redacted))
        return out_list
    if value is None or isinstance(value, bool | int | str):
        # PostgreSQL text cannot hold NUL; drop it rather than fail the whole event.
        return value.replace("\x00", "") if isinstance(value, str) else value
    if isinstance(value, float):
        # jsonb rewrites some floats (1e20 -> 100000000000000000000), which would change the
        # canonical form between write and verify; a string keeps the value and the hash stable.
        return repr(value)
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    where = path or "<root>"
    raise AuditDetailsError(f"details value at {where} has unsupported type {type(value).__name__}")
