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
from dataclasses import dataclass

from django.conf import settings

from cms import vault
from keys import keystore
from keys.errors import KeystoreError, KeystoreUnavailable

_VERSION = re.compile(r"^vault:v(\d+):")
ROUNDS = 5


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


def rewrap_tenant(tenant_id: int, *, batch_size: int = keystore.DEFAULT_BATCH,
                  raise_min_version: bool = True) -> RewrapReport:
    """Bring every blob of the tenant to the latest KEK version, `batch_size` blobs per Transit call."""
    info = keystore.kek_info(tenant_id)
    if info is None:
        raise KeystoreError(f"tenant {tenant_id} has no KEK")
    latest = info["latest_version"]
    paths = list_secrets(tenant_id)
    rewrapped = calls = 0
    todo = list(paths)
    for _ in range(ROUNDS):
        if not todo:
            break
        lost_race: list[str] = []
        # read, rewrap and write in chunks so memory and request size stay bounded
        chunk: list[tuple[str, dict[str, str], int]] = []
        stale_count = 0
        for path in todo:
            fields, version = keystore.read_secret(path)
            stale = sum(1 for ct in fields.values() if kek_version_of(ct) < latest)
            if not stale:
                continue
            if chunk and stale_count + stale > batch_size:
                # a secret is rewrapped whole, in the batch its first blob lands in
                done, lost, used = _rewrap_chunk(tenant_id, chunk, latest, batch_size)
                rewrapped, calls, lost_race = rewrapped + done, calls + used, lost_race + lost
                chunk, stale_count = [], 0
            chunk.append((path, fields, version))
            stale_count += stale
        if chunk:
            done, lost, used = _rewrap_chunk(tenant_id, chunk, latest, batch_size)
            rewrapped, calls, lost_race = rewrapped + done, calls + used, lost_race + lost
        todo = lost_race
    if todo:
        raise KeystoreUnavailable(f"secrets kept changing during rewrap: {', '.join(todo)}; try again")
    min_version = info["min_decryption_version"]
    if raise_min_version and min_version < latest:
        keystore.set_min_decryption_version(tenant_id, latest)
        min_version = latest
    return RewrapReport(kek_version=latest, secrets=len(paths), blobs_rewrapped=rewrapped,
                        transit_calls=calls, min_decryption_version=min_version)


def _rewrap_chunk(tenant_id: int, chunk, latest: int, batch_size: int) -> tuple[int, list[str], int]:
    items = [(keystore.BlobRef(path, f), ct) for path, fields, _ in chunk
             for f, ct in sorted(fields.items()) if kek_version_of(ct) < latest]
    new: dict[keystore.BlobRef, str] = {}
    calls = 0
    for start in range(0, len(items), batch_size):
        new.update(_rewrap_batch(tenant_id, items[start:start + batch_size]))
        calls += 1
    lost = []
    for path, fields, version in chunk:
        updated = {f: new.get(keystore.BlobRef(path, f), ct) for f, ct in fields.items()}
        written = keystore.write_secret(path, updated, version)
        if written is None:
            lost.append(path)  # someone wrote meanwhile: read it again next round
            continue
        # the older versions hold the same keys under old KEK versions: erase them
        keystore.destroy_versions(path, written - 1)
    done = sum(1 for ref in new if ref.path not in lost)
    return done, lost, calls


def rewrap_one_by_one(tenant_id: int) -> RewrapReport:
    """The same job with one Transit call per blob: only for bench/rewrap.py's comparison."""
    return rewrap_tenant(tenant_id, batch_size=1, raise_min_version=False)
