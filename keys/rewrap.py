"""KEK rotation in Vault: rewrap every blob of a tenant with Transit batch rewrap, then retire old versions.

Plain keys never leave Vault here: `transit/rewrap` decrypts and re-encrypts inside Vault.
Secrets are found by listing the tenant's KV prefix (so a blob the database forgot is not
left behind on an old KEK version), read one by one, rewrapped in batches that span many
secrets, and written back with check-and-set; a secret that changed meanwhile is read and
rewrapped again. Only when every blob is on the latest KEK version is
`min_decryption_version` raised, which makes older KEK versions useless.
"""
from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from django.conf import settings

from cms import vault
from keys import keystore
from keys.errors import KeystoreError, KeystoreUnavailable

_VERSION = re.compile(r"^vault:v(\d+):")
ROUNDS = 5
# Secrets read, rewrapped and written per step (bounds memory), and the threads doing the requests.
CHUNK = 2000
WORKERS = 8


@dataclass(frozen=True)
class RewrapReport:
    kek_version: int
    secrets: int
    blobs_rewrapped: int
    transit_calls: int
    min_decryption_version: int


def kek_version_of(ciphertext: str) -> int:
    match = _VERSION.match(ciphertext)
    if not match:
        raise KeystoreError("a stored blob is not a Transit ciphertext")
    return int(match[1])


def list_secrets(tenant_id: int) -> list[str]:
    """Every KV v2 secret path under the tenant's prefix (depth-first LIST of the metadata tree)."""
    kv = settings.VAULT_KV_MOUNT
    found, pending = [], [keystore.tenant_root(tenant_id) + "/"]
    while pending:
        folder = pending.pop()
        status, body = vault.call("LIST", f"{kv}/metadata/{folder}", what="list wrapped-key secrets")
        if status == 404:
            continue
        if status != 200:
            raise KeystoreError(f"listing secrets failed: HTTP {status}")
        for name in body["data"]["keys"]:
            (pending if name.endswith("/") else found).append(folder + name)
    return sorted(found)


def _rewrap_batch(tenant_id: int, items: list[tuple[keystore.BlobRef, str]]) -> dict[keystore.BlobRef, str]:
    payload = [{"ciphertext": ciphertext, "context": ref.context} for ref, ciphertext in items]
    results = keystore.transit_batch(tenant_id, "rewrap", payload, f"rewrap {len(items)} key(s)")
    failed = [str(ref) for (ref, _), result in zip(items, results, strict=True) if result.get("error")]
    if failed:
        raise KeystoreError(f"Transit could not rewrap: {', '.join(failed)}")
    return {ref: result["ciphertext"] for (ref, _), result in zip(items, results, strict=True)}


def _pool_map(workers: int, function, items: list) -> list:
    """`function` over `items`, on `workers` threads (each with its own Vault client) when more than one."""
    if workers <= 1 or len(items) <= 1:
        return [function(item) for item in items]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rewrap") as pool:
        return list(pool.map(function, items))


def _write_back(tenant_id: int, new: dict[keystore.BlobRef, str]):
    def write(entry: tuple[str, dict[str, str], int]) -> str | None:
        path, fields, version = entry
        updated = {f: new.get(keystore.BlobRef(path, f), ct) for f, ct in fields.items()}
        written = keystore.write_secret(path, updated, version)
        if written is None:
            return path  # someone wrote meanwhile: read it again next round
        # the older versions hold the same keys under old KEK versions: erase them
        keystore.destroy_versions(path, written - 1)
        return None
    return write


def rewrap_tenant(tenant_id: int, *, batch_size: int = keystore.DEFAULT_BATCH,
                  raise_min_version: bool = True, workers: int = WORKERS) -> RewrapReport:
    """Bring every blob of the tenant to the latest KEK version, `batch_size` blobs per Transit call.

    Secrets are handled CHUNK at a time: read (on `workers` threads: the KV round trips, one read,
    one check-and-set write and one destroy per secret, cost far more than the Transit batches),
    every stale blob of the chunk rewrapped in batches, then written back (threads again).
    """
    info = keystore.kek_info(tenant_id)
    if info is None:
        raise KeystoreError(f"tenant {tenant_id} has no KEK")
    latest = info["latest_version"]
    batch_size = max(1, min(batch_size, keystore.DEFAULT_BATCH))  # what one Transit request may carry
    paths = list_secrets(tenant_id)
    rewrapped = calls = 0
    todo = list(paths)
    for _ in range(ROUNDS):
        if not todo:
            break
        lost_race: list[str] = []
        for start in range(0, len(todo), CHUNK):
            part = todo[start:start + CHUNK]
            read = _pool_map(workers, keystore.read_secret, part)
            chunk = [(path, fields, version) for path, (fields, version) in zip(part, read, strict=True)
                     if any(kek_version_of(ct) < latest for ct in fields.values())]
            if not chunk:
                continue
            items = [(keystore.BlobRef(path, f), ct) for path, fields, _ in chunk
                     for f, ct in sorted(fields.items()) if kek_version_of(ct) < latest]
            batches = [items[i:i + batch_size] for i in range(0, len(items), batch_size)]
            new: dict[keystore.BlobRef, str] = {}
            for result in _pool_map(workers, lambda batch: _rewrap_batch(tenant_id, batch), batches):
                new.update(result)
            calls += len(batches)
            lost = [path for path in _pool_map(workers, _write_back(tenant_id, new), chunk) if path]
            rewrapped += sum(1 for ref in new if ref.path not in lost)
            lost_race += lost
        todo = lost_race
    if todo:
        raise KeystoreUnavailable(f"secrets kept changing during rewrap: {', '.join(todo)}; try again")
    min_version = info["min_decryption_version"]
    if raise_min_version and min_version < latest:
        keystore.set_min_decryption_version(tenant_id, latest)
        min_version = latest
    return RewrapReport(kek_version=latest, secrets=len(paths), blobs_rewrapped=rewrapped,
                        transit_calls=calls, min_decryption_version=min_version)


def rewrap_one_by_one(tenant_id: int) -> RewrapReport:
    """The naive job, one Transit call per blob and one request at a time: bench/rewrap.py's baseline."""
    return rewrap_tenant(tenant_id, batch_size=1, raise_min_version=False, workers=1)
