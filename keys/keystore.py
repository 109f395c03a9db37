"""The keystore: one Transit KEK per tenant, wrapped key blobs in KV v2, batch wrap/unwrap/rewrap.

Layout (prefix = settings.VAULT_PREFIX):

- KEK: Transit key `<prefix>-kek-t<tenant id>`, aes256-gcm96, `derived=true`, never exportable.
- Blobs: one KV v2 secret per card, `<prefix>/t<tenant>/cards/<card id>`, one field per key
  version (`s<slot id>v<number>`); master key versions share `<prefix>/t<tenant>/masters`
  (field `m<master id>v<number>`). A job's keys therefore come back in one KV read per secret
  (the card's, plus the masters' for diversified keys) and ONE Transit batch decrypt.
  Random keys of provisioning jobs come from pool secrets `<prefix>/t<tenant>/pool/<uuid>`
  (fields `k<n>`, generated and wrapped ahead, 64 per Transit batch, see `pooled`): a key
  version's `vault_ref` names its blob wherever it is. Master and pool ciphertexts are cached
  per process (ciphertext only), so a job usually needs no KV read at all.
- Binding: each blob is encrypted under the Transit derivation context = its own reference
  (`<path>#<field>`), so a blob copied to another field, card or tenant does not decrypt.
  (Transit's `associated_data` would do the same for aes256-gcm96, but OpenBao's `rewrap`
  does not take it, which would make KEK rotation impossible without unwrapping; the
  derivation context is honoured by rewrap.)
- Writers use KV v2 check-and-set and retry on a lost race. A field removed (destruction)
  is also erased from every older version of its secret (`destroy`), since KV v2 keeps them.

Plain keys exist only as `KeyBytes` (bytearrays that hide themselves from repr) yielded by
context managers that wipe them on exit.
Vault answers arrive as JSON text (immutable `str`), which Python cannot wipe: we convert
each key at once and drop the answer. Nothing here writes audit events; `keys.services`
does, in the caller's transaction.
"""
from __future__ import annotations

import base64
import binascii
import datetime
import os
import re
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from django.conf import settings
from django.utils.dateparse import parse_datetime

from cms import vault
from keys.errors import KeystoreError, KeystoreUnavailable

KEY_BYTES = 16
CAS_ATTEMPTS = 5
# OpenBao refuses a request body with more than 1,000 JSON strings (listener max_request_json_strings):
# a batch item is 4 of them ({"ciphertext": ..., "context": ...}), so 249 items is the most one call takes.
DEFAULT_BATCH = 240

_REF = re.compile(r"^(?P<path>[A-Za-z0-9_./-]+)#(?P<field>[A-Za-z0-9_]+)$")

# Ciphertexts (never plaintexts) of the master-key and key-pool secrets, as last read (or written) here:
# every job of a tenant unwraps its masters and takes its random keys from a pool, and these blobs change
# only when a version is added, removed or rewrapped.
# An entry serves for MASTER_CACHE_SECONDS; a field it lacks, or a blob Transit no longer decrypts with
# (a rewrap raised min_decryption_version), sends the unwrap back to KV once. Writes from this process
# drop the path's entry at once. Whether a master version may be used at all is the database's state,
# checked by the callers before they unwrap.
MASTER_CACHE_SECONDS = 60.0
_master_blobs: dict[tuple[str, str, str], tuple[dict[str, str], float]] = {}
_cache_lock = threading.Lock()


@dataclass(frozen=True, order=True)
class BlobRef:
    """Where one wrapped key is: a KV v2 secret path (under the KV mount) and a field name."""

    path: str
    field: str

    def __str__(self) -> str:
        return f"{self.path}#{self.field}"

    @classmethod
    def parse(cls, ref: str) -> BlobRef:
        match = _REF.match(ref or "")
        if not match:
            raise KeystoreError(f"not a keystore reference: {ref!r}")
        return cls(match["path"], match["field"])

    @property
    def context(self) -> str:
        """The Transit derivation context that binds the ciphertext to this reference."""
        return _b64(str(self).encode())


class KeyBytes(bytearray):
    """A plain key: a bytearray whose repr() and str() never show the bytes (logs, tracebacks, asserts)."""

    def __repr__(self) -> str:
        return f"<key: {len(self)} bytes>"

    __str__ = __repr__

    def wipe(self) -> None:
        self[:] = bytes(len(self))


def kek_name(tenant_id: int) -> str:
    return f"{settings.VAULT_PREFIX}-kek-t{tenant_id}"


def tenant_root(tenant_id: int) -> str:
    return f"{settings.VAULT_PREFIX}/t{tenant_id}"


def card_key_ref(*, tenant_id: int, card_id: int, slot_id: int, number: int) -> BlobRef:
    return BlobRef(f"{tenant_root(tenant_id)}/cards/{card_id}", f"s{slot_id}v{number}")


def master_key_ref(*, tenant_id: int, master_id: int, number: int) -> BlobRef:
    return BlobRef(f"{tenant_root(tenant_id)}/masters", f"m{master_id}v{number}")


def _b64(data: bytes | bytearray) -> str:
    return base64.b64encode(bytes(data)).decode()


def _mounts() -> tuple[str, str]:
    return settings.VAULT_TRANSIT_MOUNT, settings.VAULT_KV_MOUNT


def _check_tenant(tenant_id: int, refs: Iterable[BlobRef]) -> None:
    root = tenant_root(tenant_id) + "/"
    foreign = [str(ref) for ref in refs if not ref.path.startswith(root)]
    if foreign:
        raise KeystoreError(f"references outside tenant {tenant_id}: {', '.join(foreign)}")


def _cache_slot(path: str) -> tuple[str, str, str]:
    return (settings.VAULT_ADDR, settings.VAULT_KV_MOUNT, path)


def _cacheable(path: str) -> bool:
    return path.endswith("/masters") or "/pool/" in path


def _forget_blobs(path: str) -> None:
    with _cache_lock:
        _master_blobs.pop(_cache_slot(path), None)


def forget_cached_blobs() -> None:
    """Drop every cached master ciphertext (tests that point the CMS at another Vault; after a rewrap)."""
    with _cache_lock:
        _master_blobs.clear()


def _blobs(path: str, fields: Iterable[str]) -> tuple[dict[str, str], bool]:
    """(the secret's fields, whether they came from the cache): cached only for master secrets, and only
    when every wanted field is there and the entry is young enough."""
    if _cacheable(path):
        entry = _master_blobs.get(_cache_slot(path))
        if entry is not None and time.monotonic() - entry[1] < MASTER_CACHE_SECONDS \
                and all(field in entry[0] for field in fields):
            return entry[0], True
    read_at = time.monotonic()
    data = read_secret(path)[0]
    if _cacheable(path):
        with _cache_lock:
            _master_blobs[_cache_slot(path)] = (data, read_at)
    return data, False


def _errors(body: dict) -> str:
    # Vault's top-level error strings describe the request, never the data; keep them short
    return "; ".join(str(e)[:120] for e in body.get("errors", [])) or "no detail"


def _read(method: str, path: str, what: str) -> dict | None:
    """A Vault read's body; None when there is nothing at `path` (404); any other answer than 200 raises,
    saying what was being done."""
    status, body = vault.call(method, path, what=what)
    if status == 404:
        return None
    if status != 200:
        raise KeystoreError(f"could not {what}: HTTP {status} {_errors(body)}")
    return body


# --- Transit KEK ----------------------------------------------------------------------------------

def kek_info(tenant_id: int) -> dict | None:
    """{"latest_version", "min_decryption_version", "derived", "type"} or None if there is no KEK."""
    transit, _ = _mounts()
    body = _read("GET", f"{transit}/keys/{kek_name(tenant_id)}", "read tenant KEK")
    if body is None:
        return None
    data = body["data"]
    return {k: data[k] for k in ("latest_version", "min_decryption_version", "derived", "type")}


def ensure_kek(tenant_id: int) -> bool:
    """Create the tenant's KEK if it is missing; True when it was created now."""
    info = kek_info(tenant_id)
    if info is not None:
        if info["type"] != "aes256-gcm96" or not info["derived"]:
            raise KeystoreError(f"tenant KEK {kek_name(tenant_id)} exists with the wrong type or derivation")
        return False
    transit, _ = _mounts()
    status, body = vault.call("POST", f"{transit}/keys/{kek_name(tenant_id)}",
                              {"type": "aes256-gcm96", "derived": True},
                              what="create tenant KEK")
    if status not in (200, 204):
        raise KeystoreError(f"creating tenant KEK failed: HTTP {status} {_errors(body)}")
    return True


def rotate_kek(tenant_id: int) -> int:
    """Add a new KEK version (new wraps use it); returns the new latest version."""
    transit, _ = _mounts()
    status, body = vault.call("POST", f"{transit}/keys/{kek_name(tenant_id)}/rotate", {},
                              what="rotate tenant KEK")
    if status not in (200, 204):
        raise KeystoreError(f"rotating tenant KEK failed: HTTP {status} {_errors(body)}")
    return kek_info(tenant_id)["latest_version"]


def set_min_decryption_version(tenant_id: int, version: int) -> None:
    transit, _ = _mounts()
    status, body = vault.call("POST", f"{transit}/keys/{kek_name(tenant_id)}/config",
                              {"min_decryption_version": version}, what="raise KEK min_decryption_version")
    if status not in (200, 204):
        raise KeystoreError(f"setting min_decryption_version failed: HTTP {status} {_errors(body)}")


def transit_batch(tenant_id: int, operation: str, items: list[dict], what: str) -> list[dict]:
    """Transit batch calls of at most DEFAULT_BATCH items (one call for most callers); on a 400 the
    per-item results still come back and are judged by the caller."""
    transit, _ = _mounts()
    results: list[dict] = []
    for start in range(0, len(items), DEFAULT_BATCH):
        part = items[start:start + DEFAULT_BATCH]
        status, body = vault.call("POST", f"{transit}/{operation}/{kek_name(tenant_id)}",
                                  {"batch_input": part}, what=what)
        answered = (body.get("data") or {}).get("batch_results")
        if status not in (200, 400) or answered is None or len(answered) != len(part):
            raise KeystoreError(f"{what} failed: HTTP {status} {_errors(body)}")
        results += answered
    return results


def _encrypt(tenant_id: int, keys: Mapping[BlobRef, bytes | bytearray]) -> dict[BlobRef, str]:
    refs = list(keys)
    items = [{"plaintext": _b64(keys[ref]), "context": ref.context} for ref in refs]
    results = transit_batch(tenant_id, "encrypt", items, f"wrap {len(refs)} key(s)")
    failed = [str(ref) for ref, result in zip(refs, results, strict=True) if result.get("error")]
    if failed:
        raise KeystoreError(f"Transit refused to wrap: {', '.join(failed)}")
    return {ref: result["ciphertext"] for ref, result in zip(refs, results, strict=True)}


# --- KV v2 secrets --------------------------------------------------------------------------------

def read_secret(path: str) -> tuple[dict[str, str], int]:
    """(fields, current version); ({}, 0) for a secret that does not exist or whose latest is deleted."""
    _, kv = _mounts()
    status, body = vault.call("GET", f"{kv}/data/{path}", what="read wrapped keys")
    if status == 404:
        # no secret yet (version 0), or its latest version was deleted: Vault still names the version
        return {}, ((body.get("data") or {}).get("metadata") or {}).get("version", 0)
    if status != 200:
        raise KeystoreError(f"reading wrapped keys failed: HTTP {status} {_errors(body)}")
    data = body["data"]
    return dict(data.get("data") or {}), data["metadata"]["version"]


def write_secret(path: str, fields: dict[str, str], cas: int) -> int | None:
    """Write with check-and-set; the new version, or None when another writer got there first."""
    _, kv = _mounts()
    _forget_blobs(path)
    status, body = vault.call("POST", f"{kv}/data/{path}", {"options": {"cas": cas}, "data": fields},
                              what="store wrapped keys")
    if status == 200:
        return body["data"]["version"]
    if status == 400 and any("check-and-set" in str(e) for e in body.get("errors", [])):
        return None
    raise KeystoreError(f"storing wrapped keys failed: HTTP {status} {_errors(body)}")


def destroy_versions(path: str, up_to: int) -> None:
    """Erase versions 1..up_to of a secret for good (older copies of removed or rewrapped blobs)."""
    if up_to < 1:
        return
    _, kv = _mounts()
    _forget_blobs(path)
    status, body = vault.call("POST", f"{kv}/destroy/{path}", {"versions": list(range(1, up_to + 1))},
                              what="destroy old wrapped-key versions")
    if status not in (200, 204):
        raise KeystoreError(f"destroying old versions failed: HTTP {status} {_errors(body)}")


def _delete_metadata(path: str) -> None:
    _, kv = _mounts()
    _forget_blobs(path)
    status, body = vault.call("DELETE", f"{kv}/metadata/{path}", what="delete wrapped-key secret")
    if status not in (200, 204, 404):
        raise KeystoreError(f"deleting secret failed: HTTP {status} {_errors(body)}")


def _update_secret(path: str, change, *, purge_history: bool, assume_new: bool = False) -> dict[str, str]:
    """Read-modify-write one secret with check-and-set, retrying when a concurrent writer wins.

    `change(fields) -> fields` must be pure (it may run more than once). With `purge_history`
    every older version is destroyed after the write, so no removed or superseded blob lingers.
    With `assume_new` the first attempt skips the read and writes with cas=0, which KV v2 refuses
    unless the secret does not exist; a refusal falls back to reading it (one round trip saved for a
    new card's first keys, one lost when the guess is wrong).
    """
    for attempt in range(CAS_ATTEMPTS):
        fields, version = ({}, 0) if assume_new and attempt == 0 else read_secret(path)
        new_fields = change(dict(fields))
        if new_fields == fields and version:
            return fields
        if not new_fields:
            _delete_metadata(path)  # removes every version and the history at once
            return {}
        new_version = write_secret(path, new_fields, version)
        if new_version is not None:
            if purge_history:
                destroy_versions(path, new_version - 1)
            return new_fields
    raise KeystoreUnavailable(f"too many concurrent writers on {path}; try again")


def store_wrapped(tenant_id: int, wrapped: Mapping[BlobRef, str], *, replace: bool = False,
                  assume_new: bool = False) -> None:
    """Put ciphertexts in their fields (one check-and-set write per secret).

    An existing blob is never overwritten unless `replace` says the caller knows it is an
    orphan (a version number the database, holding the slot's row lock, has never recorded).
    `assume_new`: the secrets probably do not exist yet; write without reading first (see
    `_update_secret`).
    """
    _check_tenant(tenant_id, wrapped)
    by_path: dict[str, dict[str, str]] = defaultdict(dict)
    for ref, ciphertext in wrapped.items():
        by_path[ref.path][ref.field] = ciphertext

    for path, new in by_path.items():
        overwritten: list[str] = []

        def add(fields, new=new, path=path, overwritten=overwritten):
            taken = sorted(set(fields) & set(new))
            if taken and not replace:
                names = ", ".join(f"{path}#{f}" for f in taken)
                raise KeystoreError(f"refusing to overwrite wrapped keys: {names}")
            overwritten[:] = taken
            return {**fields, **new}
        _update_secret(path, add, purge_history=False, assume_new=assume_new)
        if overwritten:
            # the orphan's old blob must not stay in the secret's history
            destroy_versions(path, read_secret(path)[1] - 1)


# --- Public operations ----------------------------------------------------------------------------

def wrap_and_store(tenant_id: int, keys: Mapping[BlobRef, bytes | bytearray], *,
                   replace: bool = False, assume_new: bool = False) -> None:
    """Wrap keys in ONE Transit batch under the tenant KEK and store them (one write per secret)."""
    if not keys:
        return
    _check_tenant(tenant_id, keys)
    for ref, key in keys.items():
        if len(key) not in (16, 24, 32):
            raise KeystoreError(f"{ref}: a key is 16, 24 or 32 bytes")
    store_wrapped(tenant_id, _encrypt(tenant_id, keys), replace=replace, assume_new=assume_new)


# --- random keys generated ahead --------------------------------------------------------------------

POOL_KEYS = 64
# per (Vault, prefix, tenant): the references not handed out yet, each with the time.monotonic() of its
# refill, oldest first
_pools: dict[tuple[str, str, int], list[tuple[BlobRef, float]]] = {}
_pool_lock = threading.Lock()


def pooled(tenant_id: int, count: int, *, length: int = KEY_BYTES) -> list[BlobRef]:
    """References of `count` new random keys, already wrapped and stored, for new key versions.

    Why: a job that generated its random keys paid a Transit encrypt and a KV write of its own on
    top of the unwrap batch. Here this process generates POOL_KEYS keys at a time (os.urandom),
    wraps them in ONE Transit batch and stores them with ONE KV write, as fields k0..kN of a new
    secret `<tenant>/pool/<uuid>` (each blob bound to its own reference, like every blob); the
    plain keys are wiped at once and only the references (and ciphertexts, in the cache) stay
    here. A job then unwraps its pool keys in the same Transit batch as its other keys. Each
    reference is handed out once (process-local pool, a new secret per refill: no two processes
    share one); a reference taken by a transaction that rolls back is never handed out again.
    A reference not handed out within KEY_POOL_MAX_AGE_SECONDS of its refill is dropped, never
    handed out: so a pool secret older than twice that is done with, and `keys.pool.sweep` removes
    its blobs that no key version took (left by a process that exited, or by a rollback).
    """
    slot = (settings.VAULT_ADDR, settings.VAULT_PREFIX, tenant_id)
    max_age = settings.KEY_POOL_MAX_AGE_SECONDS
    with _pool_lock:
        refs = _pools.setdefault(slot, [])
        now = time.monotonic()
        aged = 0
        while aged < len(refs) and now - refs[aged][1] >= max_age:
            aged += 1
        del refs[:aged]
        if len(refs) < count:
            filled_at = time.monotonic()  # before the secret is written: its created_time in Vault is later
            refs.extend((ref, filled_at) for ref in _fill_pool(tenant_id, max(POOL_KEYS, count - len(refs)),
                                                                length))
        taken = [ref for ref, _ in refs[:count]]
        del refs[:count]
    return taken


def _fill_pool(tenant_id: int, count: int, length: int) -> list[BlobRef]:
    path = f"{tenant_root(tenant_id)}/pool/{uuid.uuid4().hex}"
    refs = [BlobRef(path, f"k{n}") for n in range(count)]
    keys = {ref: KeyBytes(os.urandom(length)) for ref in refs}
    try:
        wrapped = _encrypt(tenant_id, keys)
    finally:
        _wipe_all(keys)
    store_wrapped(tenant_id, wrapped, assume_new=True)
    now = time.monotonic()
    with _cache_lock:
        # entries too old to serve are dropped here: one per pool secret ever read or written would
        # otherwise stay for the life of the process
        for stale in [slot for slot, (_, read_at) in _master_blobs.items()
                      if now - read_at >= MASTER_CACHE_SECONDS]:
            del _master_blobs[stale]
        _master_blobs[_cache_slot(path)] = ({ref.field: ct for ref, ct in wrapped.items()}, now)
    return refs


def forget_pools() -> None:
    """Drop the references not handed out yet (tests that point the CMS at another Vault)."""
    with _pool_lock:
        _pools.clear()


@dataclass(frozen=True)
class PoolSecret:
    """A pool secret as its KV v2 metadata describes it (for `keys.pool.sweep`)."""

    path: str
    created: datetime.datetime  # Vault's created_time of the secret (its first version)
    version: int  # the current version
    history: bool  # an older version still holds data (not destroyed)


def pool_secrets(tenant_id: int) -> list[str]:
    """The paths of the tenant's pool secrets (one KV v2 metadata LIST of `<tenant>/pool/`)."""
    _, kv = _mounts()
    folder = f"{tenant_root(tenant_id)}/pool/"
    body = _read("LIST", f"{kv}/metadata/{folder}", "list key-pool secrets")
    if body is None:
        return []
    return sorted(folder + name for name in body["data"]["keys"] if not name.endswith("/"))


def pool_secret(path: str) -> PoolSecret | None:
    """A pool secret's metadata (no ciphertext); None when it is gone."""
    _, kv = _mounts()
    body = _read("GET", f"{kv}/metadata/{path}", "read key-pool secret metadata")
    if body is None:
        return None
    data = body["data"]
    created = parse_datetime(data.get("created_time") or "")
    if created is None:
        raise KeystoreError(f"{path}: Vault gave no creation time")
    current = int(data.get("current_version") or 0)
    history = any(int(number) < current and not about.get("destroyed")
                  for number, about in (data.get("versions") or {}).items())
    return PoolSecret(path, created, current, history)


def pool_trim(tenant_id: int, secret: PoolSecret, referenced: Collection[str]) -> tuple[int, int]:
    """Remove the fields of a pool secret that are not in `referenced` (field names), and every older
    version of it, so no removed blob lingers; the whole secret with its metadata when no field is left.
    (fields removed, fields kept). The caller knows that no process still hands out its references."""
    if not secret.path.startswith(f"{tenant_root(tenant_id)}/pool/"):
        raise KeystoreError(f"not a key-pool secret of tenant {tenant_id}: {secret.path}")
    counts = [0, 0]

    def drop(fields):
        kept = {name: blob for name, blob in fields.items() if name in referenced}
        counts[:] = [len(fields) - len(kept), len(kept)]
        return kept
    left = _update_secret(secret.path, drop, purge_history=True)
    if not counts[0]:  # nothing to remove now: an earlier run (or a crash) may have left history or no field
        if not left:
            _delete_metadata(secret.path)
        elif secret.history:
            destroy_versions(secret.path, secret.version - 1)
    return counts[0], counts[1]


@contextmanager
def generate(tenant_id: int, refs: Iterable[BlobRef], *, source: str = "cms",
             length: int = KEY_BYTES, replace: bool = False,
             assume_new: bool = False) -> Iterator[dict[BlobRef, KeyBytes]]:
    """Generate random keys, store them wrapped, and yield them (wiped on exit) to compute KCVs.

    `source="cms"`: os.urandom in this process, wrapped in one Transit batch.
    `source="vault"`: Transit `datakey/plaintext` (Vault's RNG, one call per key).
    The keys are stored before they are yielded: nothing uses a key the keystore does not hold.
    """
    refs = list(dict.fromkeys(refs))
    _check_tenant(tenant_id, refs)
    keys: dict[BlobRef, KeyBytes] = {}
    try:
        if source == "cms":
            for ref in refs:
                keys[ref] = KeyBytes(os.urandom(length))
            wrap_and_store(tenant_id, keys, replace=replace, assume_new=assume_new)
        elif source == "vault":
            wrapped = {}
            for ref in refs:
                keys[ref], wrapped[ref] = _datakey(tenant_id, ref, length)
            store_wrapped(tenant_id, wrapped, replace=replace, assume_new=assume_new)
        else:
            raise ValueError("source is 'cms' or 'vault'")
        yield keys
    finally:
        _wipe_all(keys)


def _datakey(tenant_id: int, ref: BlobRef, length: int) -> tuple[KeyBytes, str]:
    transit, _ = _mounts()
    status, body = vault.call("POST", f"{transit}/datakey/plaintext/{kek_name(tenant_id)}",
                              {"bits": length * 8, "context": ref.context}, what="generate a data key")
    if status != 200:
        raise KeystoreError(f"Vault data key generation failed: HTTP {status} {_errors(body)}")
    data = body["data"]
    key = KeyBytes(base64.b64decode(data.pop("plaintext")))
    return key, data["ciphertext"]


@contextmanager
def unwrap(tenant_id: int, refs: Iterable[BlobRef]) -> Iterator[dict[BlobRef, KeyBytes]]:
    """Unwrap keys: one KV read per distinct secret and ONE Transit batch decrypt; wiped on exit.

    Master secrets' ciphertexts may come from the cache (no KV read); an item that came from it
    and does not decrypt is read again from KV and decrypted once more, in a second batch.
    """
    refs = list(dict.fromkeys(refs))
    _check_tenant(tenant_id, refs)
    keys: dict[BlobRef, KeyBytes] = {}
    try:
        if refs:
            secrets: dict[str, dict[str, str]] = {}
            cached: set[str] = set()
            for path in dict.fromkeys(ref.path for ref in refs):
                secrets[path], hit = _blobs(path, [ref.field for ref in refs if ref.path == path])
                if hit:
                    cached.add(path)
            missing = [str(ref) for ref in refs if ref.field not in secrets[ref.path]]
            if missing:
                raise KeystoreError(f"no wrapped key at: {', '.join(missing)}")
            failed = _decrypt_into(keys, tenant_id, refs, secrets)
            stale = [ref for ref in failed if ref.path in cached]
            if stale:
                for path in dict.fromkeys(ref.path for ref in stale):
                    _forget_blobs(path)
                    secrets[path], _ = _blobs(path, [])
                missing = [str(ref) for ref in stale if ref.field not in secrets[ref.path]]
                if missing:
                    raise KeystoreError(f"no wrapped key at: {', '.join(missing)}")
                failed = [ref for ref in failed if ref not in stale] + \
                    _decrypt_into(keys, tenant_id, stale, secrets)
            if failed:
                raise KeystoreError(f"wrapped key does not unwrap (wrong slot, KEK version too old, "
                                    f"or tampered): {', '.join(str(ref) for ref in failed)}")
        yield keys
    finally:
        _wipe_all(keys)


def _decrypt_into(keys: dict[BlobRef, KeyBytes], tenant_id: int, refs: list[BlobRef],
                  secrets: Mapping[str, Mapping[str, str]]) -> list[BlobRef]:
    """One Transit batch decrypt of `refs` into `keys`; the refs that did not decrypt."""
    items = [{"ciphertext": secrets[ref.path][ref.field], "context": ref.context} for ref in refs]
    results = transit_batch(tenant_id, "decrypt", items, f"unwrap {len(refs)} key(s)")
    failed = []
    for ref, result in zip(refs, results, strict=True):
        if result.get("error"):
            failed.append(ref)
            continue
        try:
            keys[ref] = KeyBytes(base64.b64decode(result.pop("plaintext"), validate=True))
        except (KeyError, binascii.Error):
            failed.append(ref)
    del results
    return failed


def remove(tenant_id: int, refs: Iterable[BlobRef]) -> None:
    """Delete blobs for good: drop their fields and destroy every older version of their secrets."""
    refs = list(dict.fromkeys(refs))
    _check_tenant(tenant_id, refs)
    by_path: dict[str, set[str]] = defaultdict(set)
    for ref in refs:
        by_path[ref.path].add(ref.field)
    for path, doomed in by_path.items():
        def drop(fields, doomed=doomed):
            return {k: v for k, v in fields.items() if k not in doomed}
        _update_secret(path, drop, purge_history=True)


def exists(ref: BlobRef) -> bool:
    return ref.field in read_secret(ref.path)[0]


def _wipe_all(keys: Mapping[BlobRef, bytearray]) -> None:
    for key in keys.values():
        key[:] = bytes(len(key))
