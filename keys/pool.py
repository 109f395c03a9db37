"""The key pool's leftovers: wrapped keys in pool secrets that no key version took, removed from Vault.

Each process fills its pool with a new secret `<tenant>/pool/<uuid>` of POOL_KEYS wrapped random keys
(keystore.pooled) and hands each reference out once, to a new key version. What it has not handed out when
it exits, and what a transaction that rolled back took, stays in Vault with nothing pointing at it. A
process hands a reference out only within KEY_POOL_MAX_AGE_SECONDS of its refill, so a pool secret created
more than twice that long ago (by Vault's clock: the secret's created_time) gets no new reference: the
second period is the margin for a transaction that took one at the last moment and has not committed yet.

The sweep (beat, `keys.pool_sweep`; `manage.py key_pool_sweep`) looks at each tenant's pool secrets past
that age and keeps only the fields some key version names (in any state but destroyed: destroying a
version already removed its blob). Every other field goes, with every older version of the secret (KV v2
keeps them); a secret left with no field is deleted with its metadata. One audit event per tenant and run
(`keys.pool_swept`, counts and paths) when anything was removed or failed.
"""
from __future__ import annotations

from collections import defaultdict
from datetime import timedelta

import structlog
from django.conf import settings
from django.utils import timezone

from audit.chainkey import chain_key
from audit.services import record_event
from cards.models import Tenant
from keys import keystore
from keys.errors import KeystoreError, KeystoreUnavailable
from keys.models import KeyVersion, VersionState

log = structlog.get_logger(__name__)
COUNTS = ("examined_count", "deleted_count", "trimmed_count", "removed_count", "kept_count", "failed_count")


def sweep(*, now=None, tenants=None) -> dict[str, int]:
    """Sweep every tenant's (or the given tenants') pool secrets older than 2 x KEY_POOL_MAX_AGE_SECONDS.

    Returns the counts over all tenants. Vault away (sealed, unreachable) raises KeystoreUnavailable
    once the tenant at hand is audited for what was done before (beat defers the run)."""
    limit = (now or timezone.now()) - timedelta(seconds=2 * settings.KEY_POOL_MAX_AGE_SECONDS)
    totals = dict.fromkeys(COUNTS, 0)
    for tenant in tenants if tenants is not None else Tenant.objects.order_by("pk"):
        for name, value in _sweep_tenant(tenant, limit).items():
            totals[name] += value
    return totals


def _sweep_tenant(tenant: Tenant, limit) -> dict[str, int]:
    counts = dict.fromkeys(COUNTS, 0)
    old = []
    for path in keystore.pool_secrets(tenant.pk):
        secret = keystore.pool_secret(path)
        if secret is not None and secret.created < limit:
            old.append(secret)
    if not old:
        return counts
    referenced = _referenced_fields(tenant.pk, {secret.path for secret in old})
    # the audit chain key is read (and cached) before anything is removed: if Vault goes away half-way,
    # the event that says what was removed until then can still be written
    chain_key()
    deleted_paths, trimmed_paths, failed_paths = [], [], []
    try:
        for secret in old:
            counts["examined_count"] += 1
            try:
                removed, kept = keystore.pool_trim(tenant.pk, secret, referenced.get(secret.path, set()))
            except KeystoreUnavailable:
                raise
            except KeystoreError as exc:  # this secret only; the next run tries again
                counts["failed_count"] += 1
                failed_paths.append(secret.path)
                log.warning("keys.pool_sweep_failed", tenant=tenant.slug, path=secret.path, error=str(exc))
                continue
            counts["removed_count"] += removed
            counts["kept_count"] += kept
            if removed and not kept:
                counts["deleted_count"] += 1
                deleted_paths.append(secret.path)
            elif removed:
                counts["trimmed_count"] += 1
                trimmed_paths.append(secret.path)
    finally:
        # also when Vault went away half-way: what was removed until then is audited
        if counts["removed_count"] or counts["failed_count"]:
            record_event(action="keys.pool_swept", actor=None, tenant=tenant,
                         result="failure" if counts["failed_count"] else "success",
                         details={**counts, "max_age_seconds": settings.KEY_POOL_MAX_AGE_SECONDS,
                                  "created_before": limit.isoformat(), "deleted_paths": deleted_paths,
                                  "trimmed_paths": trimmed_paths, "failed_paths": failed_paths})
    return counts


def _referenced_fields(tenant_id: int, paths: set[str]) -> dict[str, set[str]]:
    """{pool secret path: the field names some key version (not destroyed) names}, for `paths`.

    One query over the tenant's pooled versions (a tenant's references all start with its root)."""
    prefix = f"{keystore.tenant_root(tenant_id)}/pool/"
    referenced: dict[str, set[str]] = defaultdict(set)
    refs = (KeyVersion.objects.filter(vault_ref__startswith=prefix).exclude(state=VersionState.DESTROYED)
            .values_list("vault_ref", flat=True))
    for value in refs.iterator(chunk_size=5000):
        path, _, field = value.partition("#")
        if path in paths:
            referenced[path].add(field)
    return referenced
