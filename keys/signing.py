"""The CMS's job-signing key: Ed25519 in Vault Transit, so its private half never leaves Vault.

Jobs are signed by Transit (`transit/sign/<name>`); Vault answers `vault:v<N>:<b64>`, of which the
envelope carries the base64 as `signature` and N as `signing_key_version` (see readeragent.protocol).
Public halves are read from Transit once per version and cached: a version's public key never
changes, so verifying costs no Vault round trip. Every call fails closed: a sealed or unreachable
Vault raises KeystoreUnavailable (API 503), and nothing is signed without Vault.
"""
from __future__ import annotations

import base64
import binascii
import re
import threading
import time
from collections.abc import Mapping

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from django.conf import settings

from cms import vault
from keys.errors import KeystoreError
from readeragent import protocol

_VAULT_SIGNATURE = re.compile(r"^vault:v(?P<version>[0-9]{1,6}):(?P<b64>[A-Za-z0-9+/=]+)$")
_public_keys: dict[tuple[str, str, int], bytes] = {}
_latest: dict[tuple[str, str], tuple[int, float]] = {}
LATEST_TTL_SECONDS = 60
_lock = threading.Lock()


def signing_key_name() -> str:
    """Setting `CMS_JOB_SIGNING_KEY`; empty: `<VAULT_PREFIX>-job-signing` (inside the CMS Vault policy)."""
    return settings.CMS_JOB_SIGNING_KEY or f"{settings.VAULT_PREFIX}-job-signing"


def _errors(body: dict) -> str:
    return "; ".join(str(e)[:120] for e in body.get("errors", [])) or "no detail"


def _read_key() -> dict | None:
    status, body = vault.call("GET", f"{settings.VAULT_TRANSIT_MOUNT}/keys/{signing_key_name()}",
                              what="read the job-signing key")
    if status == 404:
        return None
    if status != 200:
        raise KeystoreError(f"reading the job-signing key failed: HTTP {status} {_errors(body)}")
    return body["data"]


def ensure_signing_key() -> dict:
    """The Transit key's description, creating the Ed25519 key if it is missing."""
    data = _read_key()
    if data is None:
        status, body = vault.call("POST", f"{settings.VAULT_TRANSIT_MOUNT}/keys/{signing_key_name()}",
                                  {"type": "ed25519"}, what="create the job-signing key")
        if status not in (200, 204):
            raise KeystoreError(f"creating the job-signing key failed: HTTP {status} {_errors(body)}")
        data = _read_key()
        if data is None:
            raise KeystoreError("the job-signing key was created but cannot be read back")
    if data.get("type") != "ed25519":
        raise KeystoreError(f"Transit key {signing_key_name()} exists but is not ed25519")
    _remember(data)
    return data


def _remember(data: dict) -> None:
    with _lock:
        for number, info in (data.get("keys") or {}).items():
            raw = base64.b64decode(info["public_key"])
            _public_keys[(settings.VAULT_ADDR, signing_key_name(), int(number))] = raw


def public_key(version: int | None = None) -> tuple[bytes, int]:
    """(raw 32-byte Ed25519 public key, version): the latest version unless one is named.

    The latest version number is re-read from Transit at most every LATEST_TTL_SECONDS: after a
    rotation, jobs may be signed with the previous version for that long, which stations accept.
    """
    where = (settings.VAULT_ADDR, signing_key_name())
    if version is None:
        latest = _latest.get(where)
        if latest is not None and time.monotonic() - latest[1] < LATEST_TTL_SECONDS:
            version = latest[0]
    if version is not None:
        cached = _public_keys.get((*where, version))
        if cached is not None:
            return cached, version
    data = ensure_signing_key()
    number = int(data["latest_version"]) if version is None else version
    _latest[where] = (int(data["latest_version"]), time.monotonic())
    raw = _public_keys.get((settings.VAULT_ADDR, signing_key_name(), number))
    if raw is None:
        raise KeystoreError(f"the job-signing key has no version {number}")
    return raw, number


def enrolment_info() -> dict:
    """What an enrolling station is told so it can verify jobs (contract in jobproto.md)."""
    raw, number = public_key()
    return {"cms_signing_public_key": raw.hex(), "cms_signing_key_version": number}


def rotate_signing_key() -> tuple[int, int]:
    """A new version of the job-signing key in Transit (`keys/<name>/rotate`): (previous latest, new).

    Older versions stay usable for signing (min_encryption_version is left alone): the CMS signs a
    station's jobs with the version that station acknowledged until it pins the new one."""
    before = int(ensure_signing_key()["latest_version"])
    status, body = vault.call("POST", f"{settings.VAULT_TRANSIT_MOUNT}/keys/{signing_key_name()}/rotate", {},
                              what="rotate the job-signing key")
    if status not in (200, 204):
        raise KeystoreError(f"rotating the job-signing key failed: HTTP {status} {_errors(body)}")
    data = _read_key()
    if data is None or int(data["latest_version"]) <= before:
        raise KeystoreError("the job-signing key did not get a new version")
    _remember(data)
    with _lock:
        _latest[(settings.VAULT_ADDR, signing_key_name())] = (int(data["latest_version"]), time.monotonic())
    return before, int(data["latest_version"])


def sign_document(document: Mapping, version: int | None = None) -> dict:
    """A copy of `document` with `signing_key_version` and `signature` (Ed25519 by Vault Transit).

    The version is part of what is signed, so it cannot be swapped without breaking the signature;
    the version that signed must therefore be known first: `version` (the one the receiving station
    pinned), or the latest, read (and cached) up front.
    """
    _, number = public_key(version)
    signed = {k: v for k, v in document.items() if k != "signature"}
    signed["signing_key_version"] = number
    payload = base64.b64encode(protocol.signing_input(signed)).decode("ascii")
    status, body = vault.call("POST", f"{settings.VAULT_TRANSIT_MOUNT}/sign/{signing_key_name()}",
                              {"input": payload, "key_version": number}, what="sign a job")
    if status != 200:
        raise KeystoreError(f"signing a job failed: HTTP {status} {_errors(body)}")
    match = _VAULT_SIGNATURE.match(str(body.get("data", {}).get("signature", "")))
    if not match or int(match["version"]) != number:
        raise KeystoreError("Vault returned a signature in an unexpected form")
    try:
        if len(base64.b64decode(match["b64"], validate=True)) != 64:
            raise ValueError
    except (binascii.Error, ValueError):
        raise KeystoreError("Vault returned a signature that is not 64 bytes of base64") from None
    signed["signature"] = match["b64"]
    return signed


def verify_document(document: Mapping, what: str = "job") -> None:
    """Check a CMS-signed document against the version it names; raises protocol.ProtocolError."""
    version = document.get("signing_key_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise protocol.ProtocolError("signature", f"{what} names no signing key version")
    try:
        raw, _ = public_key(version)
    except KeystoreError:
        raise protocol.ProtocolError("signature", f"{what} names an unknown signing key version") from None
    protocol.verify_signature(document, Ed25519PublicKey.from_public_bytes(raw), what)


def forget_public_keys() -> None:
    """For tests that point the CMS at another Vault."""
    with _lock:
        _public_keys.clear()
        _latest.clear()
