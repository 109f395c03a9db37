"""The HMAC key of the audit chain: read (or created once) from Vault KV v2, cached per process.

The key lives at `<VAULT_KV_MOUNT>/<VAULT_PREFIX>/audit/chain-key`. If Vault cannot be reached
when a process first needs it, `chain_key()` raises AuditUnavailable: the audit write fails, and
with it the transaction that wanted to record the event (fail closed).
"""
from __future__ import annotations

import secrets
import threading

import hvac
import requests
from django.conf import settings

from audit.errors import AuditUnavailable

KEY_BYTES = 32
_FIELD = "key"
_lock = threading.Lock()
_cache: dict[tuple[str, str, str], bytearray] = {}


def secret_path() -> str:
    return f"{settings.VAULT_PREFIX}/audit/chain-key"


def _cache_key() -> tuple[str, str, str]:
    return (settings.VAULT_ADDR, settings.VAULT_KV_MOUNT, secret_path())


def chain_key() -> bytearray:
    """The process-wide chain key (do not wipe it: it is shared; `forget_chain_key()` does)."""
    slot = _cache_key()
    key = _cache.get(slot)
    if key is not None:
        return key
    with _lock:
        key = _cache.get(slot)
        if key is None:
            key = _read_or_create()
            _cache[slot] = key
        return key


def forget_chain_key() -> None:
    """Wipe and drop the cached key (tests; after a deliberate key change)."""
    with _lock:
        for key in _cache.values():
            key[:] = bytes(len(key))
        _cache.clear()


def _read_or_create() -> bytearray:
    from cms import vault  # imported here: the app registry must be ready first

    kv_kwargs = {"path": secret_path(), "mount_point": settings.VAULT_KV_MOUNT}
    try:
        kv = vault.client().secrets.kv.v2
        try:
            return _decode(kv.read_secret_version(raise_on_deleted_version=True, **kv_kwargs))
        except hvac.exceptions.InvalidPath:
            pass
        candidate = secrets.token_hex(KEY_BYTES)
        try:
            # cas=0: only the first process to get here creates it; the others read the winner's.
            kv.create_or_update_secret(secret={_FIELD: candidate}, cas=0, **kv_kwargs)
        except hvac.exceptions.InvalidRequest:
            pass
        finally:
            del candidate
        return _decode(kv.read_secret_version(raise_on_deleted_version=True, **kv_kwargs))
    except AuditUnavailable:
        raise
    except (requests.exceptions.RequestException, hvac.exceptions.VaultError) as exc:
        raise AuditUnavailable(f"audit chain key unavailable from Vault: {type(exc).__name__}") from None
    except Exception as exc:  # noqa: BLE001 - cms.vault's own errors (login, config): still fail closed
        raise AuditUnavailable(f"audit chain key unavailable: {type(exc).__name__}") from None


def _decode(response: dict) -> bytearray:
    data = (response or {}).get("data", {}).get("data", {})
    value = data.get(_FIELD, "")
    try:
        key = bytearray.fromhex(value)
    except (TypeError, ValueError):
        raise AuditUnavailable("audit chain key in Vault is malformed") from None
    if len(key) != KEY_BYTES:
        raise AuditUnavailable("audit chain key in Vault has the wrong length")
    return key
