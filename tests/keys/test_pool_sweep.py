"""The key pool's leftovers on a real OpenBao and the database (keys/keystore.py `pooled`, keys/pool.py):
a process stops handing out a pool reference KEY_POOL_MAX_AGE_SECONDS after its refill, and the sweep
removes from Vault the wrapped keys of pool secrets older than twice that which no key version names."""
from __future__ import annotations

import io
import json
import os
import time
import types

import hvac.exceptions
import pytest
from django.conf import settings as django_settings
from django.db import transaction

from audit.models import AuditEvent
from keys import keystore, pool, sealing, services
from keys import tasks as key_tasks
from keys.kcv import kcv
from keys.models import KeyVersion, VersionState

pytestmark = [pytest.mark.vault, pytest.mark.django_db]
TENANT = 7


def _kv(vault, path: str) -> tuple[dict[str, str], int]:
    """(fields, version) of a secret, read with the root token (not through the CMS)."""
    answer = vault.root_client().secrets.kv.v2.read_secret_version(
        path=path, mount_point=django_settings.VAULT_KV_MOUNT, raise_on_deleted_version=True)
    return answer["data"]["data"], answer["data"]["metadata"]["version"]


def _versions(vault, path: str) -> dict[int, bool]:
    """{version: destroyed} of a secret; hvac's InvalidPath when the secret and its metadata are gone."""
    metadata = vault.root_client().secrets.kv.v2.read_secret_metadata(
        path=path, mount_point=django_settings.VAULT_KV_MOUNT)
    return {int(n): v["destroyed"] for n, v in metadata["data"]["versions"].items()}


class _Clock:
    """Stands in for keystore's `time` module: monotonic() runs `ahead` seconds ahead of the real clock."""

    def __init__(self) -> None:
        self.ahead = 0.0

    def monotonic(self) -> float:
        return time.monotonic() + self.ahead


def test_a_pool_reference_not_handed_out_within_max_age_is_dropped_never_handed_out(vault, settings,
                                                                                   monkeypatch):
    settings.KEY_POOL_MAX_AGE_SECONDS = 3600
    clock = _Clock()
    monkeypatch.setattr(keystore, "time", types.SimpleNamespace(monotonic=clock.monotonic))
    keystore.ensure_kek(TENANT)
    keystore.forget_pools()
    first = keystore.pooled(TENANT, 2)
    clock.ahead = 3599
    assert keystore.pooled(TENANT, 1)[0].path == first[0].path  # still young: from the same secret
    clock.ahead = 3601
    later = keystore.pooled(TENANT, keystore.POOL_KEYS)
    # the 61 references left in the first secret are gone from the process: a new secret serves all
    assert {ref.path for ref in later} == {later[0].path} and later[0].path != first[0].path
    assert len(_kv(vault, first[0].path)[0]) == keystore.POOL_KEYS  # still in Vault until the sweep


def _pending(slots, *, tenant) -> list[KeyVersion]:
    """New pending versions from the pool (as a provisioning job makes them), with their KCVs filled in."""
    with transaction.atomic():
        versions = sealing.key_versions_create_pending(slots=slots, pooled=True)
        with services.card_keys_unwrap(versions=versions) as keys:
            for version in versions:
                version.kcv = kcv(keys[version.pk], "desfire")
                version.save(update_fields=["kcv"])
    return versions


def test_the_sweep_removes_what_no_version_took_keeps_what_versions_name_and_audits_it(
        vault, settings, tenant, desfire_slots):
    keystore.forget_pools()
    # secret A: two versions take references, a rolled-back transaction takes two more, a third version
    # takes one and is destroyed (its blob removed then, as every destroyed version's)
    kept = _pending(desfire_slots[:2], tenant=tenant)
    with pytest.raises(RuntimeError), transaction.atomic():
        sealing.key_versions_create_pending(slots=desfire_slots[2:], pooled=True)
        raise RuntimeError("the job failed: its transaction rolls back")
    destroyed = _pending(desfire_slots[2:3], tenant=tenant)[0]
    services.key_version_destroy(version=destroyed)
    a = keystore.BlobRef.parse(kept[0].vault_ref).path
    assert {keystore.BlobRef.parse(v.vault_ref).path for v in [*kept, destroyed]} == {a}
    assert len(_kv(vault, a)[0]) == keystore.POOL_KEYS - 1
    # secret B: filled by a process that handed out one reference and exited before using it
    keystore.forget_pools()
    b = keystore.pooled(tenant.pk, 1)[0].path
    time.sleep(2.2)
    keystore.forget_pools()  # C: another process's pool, filled now
    c = keystore.pooled(tenant.pk, 1)[0].path
    assert len({a, b, c}) == 3
    # A and B are now older than 2 x max-age, C is not (1 s: below the settings' floor of 60, so the
    # test need not wait long)
    settings.KEY_POOL_MAX_AGE_SECONDS = 1

    out = pool.sweep()

    assert out == {"examined_count": 2, "deleted_count": 1, "trimmed_count": 1, "kept_count": 2,
                   "removed_count": keystore.POOL_KEYS - 3 + keystore.POOL_KEYS, "failed_count": 0}
    fields, version = _kv(vault, a)
    assert set(fields) == {keystore.BlobRef.parse(v.vault_ref).field for v in kept}
    assert all(destroyed for number, destroyed in _versions(vault, a).items() if number < version)
    with pytest.raises(hvac.exceptions.InvalidPath):
        _versions(vault, b)  # deleted with its metadata: no version left to read back
    assert len(_kv(vault, c)[0]) == keystore.POOL_KEYS and _versions(vault, c) == {1: False}  # young
    keystore.forget_cached_blobs()  # unwrap from Vault, not from this process's cache
    with services.card_keys_unwrap(versions=kept) as keys:
        assert [kcv(keys[v.pk], "desfire") for v in kept] == [v.kcv for v in kept]
    assert KeyVersion.objects.get(pk=destroyed.pk).state == VersionState.DESTROYED
    events = list(AuditEvent.objects.filter(action="keys.pool_swept"))
    assert [(e.tenant_id, e.result, e.actor_type) for e in events] == [(tenant.pk, "success", "system")]
    details = events[0].details
    assert (details["deleted_paths"], details["trimmed_paths"], details["removed_count"]) == \
        ([b], [a], out["removed_count"])

    # a second run finds nothing left to remove: no change in Vault, no event
    assert pool.sweep()["removed_count"] == 0
    assert _kv(vault, a) == (fields, version)
    assert AuditEvent.objects.filter(action="keys.pool_swept").count() == 1


def test_a_pool_secret_whose_fields_are_all_named_loses_only_its_older_versions(vault, tenant):
    keystore.ensure_kek(tenant.pk)
    path = f"{keystore.tenant_root(tenant.pk)}/pool/made-by-hand"
    keystore.wrap_and_store(tenant.pk, {keystore.BlobRef(path, "k0"): os.urandom(16)})
    keystore.wrap_and_store(tenant.pk, {keystore.BlobRef(path, "k1"): os.urandom(16)})  # version 2
    assert _versions(vault, path) == {1: False, 2: False}
    secret = keystore.pool_secret(path)
    assert (secret.version, secret.history) == (2, True)
    assert keystore.pool_trim(tenant.pk, secret, {"k0", "k1"}) == (0, 2)
    assert _versions(vault, path) == {1: True, 2: False} and set(_kv(vault, path)[0]) == {"k0", "k1"}
    with pytest.raises(keystore.KeystoreError, match="not a key-pool secret"):
        keystore.pool_trim(tenant.pk, keystore.PoolSecret(f"{keystore.tenant_root(tenant.pk)}/cards/1",
                                                          secret.created, 1, False), set())


def test_the_sweep_task_with_vault_sealed_is_deferred_and_changes_nothing(vault, settings, tenant):
    settings.KEY_POOL_MAX_AGE_SECONDS = 1
    keystore.ensure_kek(tenant.pk)
    keystore.forget_pools()
    path = keystore.pooled(tenant.pk, 1)[0].path
    time.sleep(2.2)
    vault.seal()
    try:
        assert key_tasks.pool_sweep.run() == {"deferred": "KeystoreUnavailable"}
    finally:
        vault.unseal()
    assert len(_kv(vault, path)[0]) == keystore.POOL_KEYS
    assert not AuditEvent.objects.filter(action="keys.pool_swept").exists()
    assert key_tasks.pool_sweep.run()["deleted_count"] == 1
    with pytest.raises(hvac.exceptions.InvalidPath):
        _versions(vault, path)


def test_vault_going_away_half_way_still_audits_what_was_removed(vault, settings, tenant, monkeypatch):
    keystore.ensure_kek(tenant.pk)
    paths = []
    for _ in range(2):
        keystore.forget_pools()
        paths.append(keystore.pooled(tenant.pk, 1)[0].path)
    time.sleep(2.2)
    settings.KEY_POOL_MAX_AGE_SECONDS = 1
    real, calls = keystore.pool_trim, []

    def trim_then_seal(*args, **kwargs):
        calls.append(args[1].path)
        if len(calls) == 2:
            vault.seal()
        return real(*args, **kwargs)

    monkeypatch.setattr(keystore, "pool_trim", trim_then_seal)
    try:
        assert key_tasks.pool_sweep.run() == {"deferred": "KeystoreUnavailable"}
    finally:
        vault.unseal()
    event = AuditEvent.objects.get(action="keys.pool_swept")
    assert (event.details["deleted_paths"], event.details["examined_count"]) == ([calls[0]], 2)
    assert len(_kv(vault, calls[1])[0]) == keystore.POOL_KEYS  # left for the next run


def test_the_management_command_runs_the_sweep_now(vault, settings, tenant):
    from django.core.management import CommandError, call_command

    keystore.ensure_kek(tenant.pk)
    keystore.forget_pools()
    path = keystore.pooled(tenant.pk, 1)[0].path
    with pytest.raises(CommandError, match="no tenant nope"):
        call_command("key_pool_sweep", "--tenant", "nope")
    out = io.StringIO()
    call_command("key_pool_sweep", "--tenant", tenant.slug, stdout=out)
    assert json.loads(out.getvalue())["examined_count"] == 0  # an hour old at the earliest
    time.sleep(2.2)
    settings.KEY_POOL_MAX_AGE_SECONDS = 1
    out = io.StringIO()
    call_command("key_pool_sweep", stdout=out)
    assert json.loads(out.getvalue())["deleted_count"] == 1
    with pytest.raises(hvac.exceptions.InvalidPath):
        _versions(vault, path)
