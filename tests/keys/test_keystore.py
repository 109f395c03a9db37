"""Keystore and rewrap on a real OpenBao: batch wrap/unwrap, binding, rewrap, destroy, fail-closed."""
from __future__ import annotations

import os

import pytest
from django.conf import settings

from keys import keystore, rewrap
from keys.errors import KeystoreError, KeystoreUnavailable
from tests.support.vault import _free_port_pair

pytestmark = pytest.mark.vault
TENANT = 7


def _refs(card_id: int, count: int, tenant_id: int = TENANT) -> list[keystore.BlobRef]:
    return [keystore.card_key_ref(tenant_id=tenant_id, card_id=card_id, slot_id=slot, number=1)
            for slot in range(1, count + 1)]


def _kv(vault, path: str) -> dict:
    return vault.root_client().secrets.kv.v2.read_secret_version(
        path=path, mount_point=settings.VAULT_KV_MOUNT, raise_on_deleted_version=True)


def _destroyed_versions(vault, path: str) -> dict[int, bool]:
    kv = vault.root_client().secrets.kv.v2
    metadata = kv.read_secret_metadata(path=path, mount_point=settings.VAULT_KV_MOUNT)
    return {int(n): v["destroyed"] for n, v in metadata["data"]["versions"].items()}


def test_new_kek_is_a_derived_aes256_gcm96_transit_key(vault):
    assert keystore.ensure_kek(TENANT) is True
    assert keystore.ensure_kek(TENANT) is False
    key = vault.root_client().secrets.transit.read_key(keystore.kek_name(TENANT))["data"]
    assert (key["type"], key["derived"], key["exportable"], key["deletion_allowed"]) == \
        ("aes256-gcm96", True, False, False)


def test_keys_wrapped_in_a_batch_come_back_in_one_kv_read_and_one_transit_call(vault, vault_calls):
    keystore.ensure_kek(TENANT)
    keys = {ref: bytearray(os.urandom(16)) for ref in _refs(card_id=1, count=5)}
    expected = {ref: bytes(key) for ref, key in keys.items()}
    vault_calls.clear()
    keystore.wrap_and_store(TENANT, keys)
    encrypts = [c for c in vault_calls if "/encrypt/" in c[1]]
    assert encrypts == [("POST", f"transit/encrypt/{keystore.kek_name(TENANT)}")]

    vault_calls.clear()
    with keystore.unwrap(TENANT, list(keys)) as plain:
        assert {ref: bytes(key) for ref, key in plain.items()} == expected
        held = list(plain.values())
    assert vault_calls == [("GET", f"secret/data/{keystore.tenant_root(TENANT)}/cards/1"),
                           ("POST", f"transit/decrypt/{keystore.kek_name(TENANT)}")]
    assert all(key == bytearray(16) for key in held)  # wiped when the block ended


def test_vault_holds_ciphertext_only_one_field_per_key_version(vault):
    keystore.ensure_kek(TENANT)
    ref = _refs(card_id=2, count=1)[0]
    key = bytearray(os.urandom(16))
    keystore.wrap_and_store(TENANT, {ref: key})
    stored = _kv(vault, ref.path)["data"]["data"]
    assert list(stored) == [ref.field]
    assert stored[ref.field].startswith("vault:v1:")
    assert key.hex() not in stored[ref.field] and key.hex().upper() not in stored[ref.field]


def test_a_blob_copied_to_another_slot_does_not_unwrap(vault):
    keystore.ensure_kek(TENANT)
    good, other = _refs(card_id=3, count=2)
    keystore.wrap_and_store(TENANT, {good: os.urandom(16), other: os.urandom(16)})
    # an attacker with KV write access copies slot 1's blob over slot 2's field
    client = vault.root_client()
    fields = _kv(vault, good.path)["data"]["data"]
    client.secrets.kv.v2.create_or_update_secret(path=good.path, mount_point=settings.VAULT_KV_MOUNT,
                                                 secret={good.field: fields[good.field],
                                                         other.field: fields[good.field]})
    with pytest.raises(KeystoreError, match="does not unwrap") as caught:
        with keystore.unwrap(TENANT, [other]):
            pass
    assert str(other) in str(caught.value)


def test_refs_of_another_tenant_are_refused_before_vault_is_asked(vault, vault_calls):
    foreign = _refs(card_id=4, count=1, tenant_id=TENANT + 1)
    with pytest.raises(KeystoreError, match="outside tenant"):
        with keystore.unwrap(TENANT, foreign):
            pass
    assert vault_calls == []


def test_an_existing_blob_is_never_overwritten_unless_replacing_an_orphan(vault):
    keystore.ensure_kek(TENANT)
    ref = _refs(card_id=5, count=1)[0]
    keystore.wrap_and_store(TENANT, {ref: bytes(16)})
    with pytest.raises(KeystoreError, match="refusing to overwrite"):
        keystore.wrap_and_store(TENANT, {ref: b"\x01" * 16})
    keystore.wrap_and_store(TENANT, {ref: b"\x02" * 16}, replace=True)
    with keystore.unwrap(TENANT, [ref]) as plain:
        assert plain[ref] == b"\x02" * 16
    # the orphan's old blob is gone from the secret's history as well
    assert _destroyed_versions(vault, ref.path) == {1: True, 2: False}


def test_vault_generated_keys_are_stored_and_unwrap_to_the_same_bytes(vault):
    keystore.ensure_kek(TENANT)
    refs = _refs(card_id=6, count=2)
    with keystore.generate(TENANT, refs, source="vault") as keys:
        generated = {ref: bytes(key) for ref, key in keys.items()}
    assert all(len(k) == 16 for k in generated.values()) and len(set(generated.values())) == 2
    with keystore.unwrap(TENANT, refs) as plain:
        assert {ref: bytes(k) for ref, k in plain.items()} == generated


def test_removed_blob_is_erased_from_every_version_of_its_secret(vault):
    keystore.ensure_kek(TENANT)
    keep, doomed = _refs(card_id=8, count=2)
    keystore.wrap_and_store(TENANT, {keep: os.urandom(16)})
    keystore.wrap_and_store(TENANT, {doomed: os.urandom(16)})  # secret versions 1 and 2
    keystore.remove(TENANT, [doomed])
    assert list(_kv(vault, keep.path)["data"]["data"]) == [keep.field]
    assert _destroyed_versions(vault, keep.path) == {1: True, 2: True, 3: False}
    with pytest.raises(KeystoreError, match="no wrapped key"):
        with keystore.unwrap(TENANT, [doomed]):
            pass
    with keystore.unwrap(TENANT, [keep]) as plain:
        assert len(plain[keep]) == 16


def test_kek_rotation_rewraps_every_blob_in_batches_and_retires_the_old_version(vault, vault_calls):
    keystore.ensure_kek(TENANT)
    keys = {}
    for card_id in range(20, 26):
        keys.update({ref: os.urandom(16) for ref in _refs(card_id=card_id, count=3)})
    keystore.wrap_and_store(TENANT, {r: k for r, k in keys.items() if r.path.endswith("/20")})
    for card_id in range(21, 26):
        keystore.wrap_and_store(TENANT, {r: k for r, k in keys.items() if r.path.endswith(f"/{card_id}")})
    old_ciphertext = _kv(vault, next(iter(keys)).path)["data"]["data"]
    assert keystore.rotate_kek(TENANT) == 2

    vault_calls.clear()
    report = rewrap.rewrap_tenant(TENANT, batch_size=10)
    assert (report.kek_version, report.secrets, report.blobs_rewrapped) == (2, 6, 18)
    assert report.transit_calls == len([c for c in vault_calls if "/rewrap/" in c[1]]) == 2
    assert report.min_decryption_version == 2
    info = keystore.kek_info(TENANT)
    assert (info["latest_version"], info["min_decryption_version"]) == (2, 2)

    for ref in keys:
        assert _kv(vault, ref.path)["data"]["data"][ref.field].startswith("vault:v2:")
    with keystore.unwrap(TENANT, list(keys)) as plain:
        assert {r: bytes(k) for r, k in plain.items()} == keys
    # a copy of a v1 blob (a backup, an old KV version) no longer decrypts
    client = vault.root_client()
    ref = next(iter(keys))
    client.secrets.kv.v2.create_or_update_secret(path=ref.path, mount_point=settings.VAULT_KV_MOUNT,
                                                 secret={ref.field: old_ciphertext[ref.field]})
    with pytest.raises(KeystoreError, match="does not unwrap"):
        with keystore.unwrap(TENANT, [ref]):
            pass


def test_rewrap_with_nothing_stale_changes_nothing(vault):
    keystore.ensure_kek(TENANT)
    keystore.wrap_and_store(TENANT, {ref: os.urandom(16) for ref in _refs(card_id=30, count=2)})
    report = rewrap.rewrap_tenant(TENANT)
    assert (report.blobs_rewrapped, report.transit_calls) == (0, 0)


def test_sealed_vault_makes_key_operations_fail_closed(vault):
    keystore.ensure_kek(TENANT)
    ref = _refs(card_id=40, count=1)[0]
    keystore.wrap_and_store(TENANT, {ref: os.urandom(16)})
    vault.seal()
    with pytest.raises(KeystoreUnavailable, match="sealed"):
        with keystore.unwrap(TENANT, [ref]):
            pass
    with pytest.raises(KeystoreUnavailable):
        keystore.wrap_and_store(TENANT, {_refs(card_id=41, count=1)[0]: os.urandom(16)})
    vault.unseal()
    with keystore.unwrap(TENANT, [ref]) as plain:
        assert len(plain[ref]) == 16


def test_unreachable_vault_makes_key_operations_fail_closed(vault, settings):
    from cms import vault as cms_vault

    settings.VAULT_ADDR = f"http://127.0.0.1:{_free_port_pair()}"
    cms_vault.reset_client()
    with pytest.raises(KeystoreUnavailable, match="unreachable"):
        keystore.ensure_kek(TENANT)
    with pytest.raises(KeystoreUnavailable, match="unreachable"):
        with keystore.unwrap(TENANT, _refs(card_id=1, count=1)):
            pass


def test_a_token_without_rights_fails_closed_not_open(vault, settings):
    from cms import vault as cms_vault

    settings.VAULT_TOKEN = "s.not-a-valid-token"
    cms_vault.reset_client()
    with pytest.raises(KeystoreUnavailable, match="refused"):
        keystore.ensure_kek(TENANT)


def test_a_batch_with_one_bad_blob_reports_refs_and_never_plaintext(vault):
    keystore.ensure_kek(TENANT)
    good, bad = _refs(card_id=50, count=2)
    secret_key = os.urandom(16)
    keystore.wrap_and_store(TENANT, {good: secret_key, bad: os.urandom(16)})
    client = vault.root_client()
    fields = _kv(vault, good.path)["data"]["data"]
    client.secrets.kv.v2.create_or_update_secret(path=good.path, mount_point=settings.VAULT_KV_MOUNT,
                                                 secret={good.field: fields[good.field],
                                                         bad.field: fields[good.field]})
    with pytest.raises(KeystoreError) as caught:
        with keystore.unwrap(TENANT, [good, bad]):
            pass
    text = str(caught.value) + repr(caught.value)
    assert str(bad) in text and str(good) not in text
    import base64
    assert base64.b64encode(secret_key).decode() not in text and secret_key.hex() not in text.lower()
    assert caught.value.__cause__ is None and caught.value.__context__ is None or \
        secret_key.hex() not in repr(caught.value.__context__)


def test_blob_ref_round_trips_and_rejects_garbage():
    ref = keystore.BlobRef("cms/t1/cards/2", "s3v4")
    assert keystore.BlobRef.parse(str(ref)) == ref
    for garbage in ("", "cms/t1/cards/2", "cms/t1#", "../x#y z"):
        with pytest.raises(KeystoreError):
            keystore.BlobRef.parse(garbage)


def test_rewrap_that_loses_a_race_to_a_concurrent_writer_rereads_and_keeps_both(vault, monkeypatch):
    keystore.ensure_kek(TENANT)
    old_ref, new_ref = _refs(card_id=60, count=2)
    keystore.wrap_and_store(TENANT, {old_ref: b"\x11" * 16})
    keystore.rotate_kek(TENANT)
    real_read = keystore.read_secret
    raced = []

    def read_then_someone_writes(path):
        result = real_read(path)
        if not raced:
            raced.append(path)
            keystore.wrap_and_store(TENANT, {new_ref: b"\x22" * 16})  # lands between our read and write
        return result

    monkeypatch.setattr(keystore, "read_secret", read_then_someone_writes)
    report = rewrap.rewrap_tenant(TENANT)
    monkeypatch.undo()
    assert raced and report.blobs_rewrapped == 1
    with keystore.unwrap(TENANT, [old_ref, new_ref]) as plain:
        assert (bytes(plain[old_ref]), bytes(plain[new_ref])) == (b"\x11" * 16, b"\x22" * 16)
    assert all(ct.startswith("vault:v2:") for ct in _kv(vault, old_ref.path)["data"]["data"].values())


def test_rewrap_erases_the_old_versions_that_held_blobs_under_the_old_kek(vault):
    keystore.ensure_kek(TENANT)
    ref = _refs(card_id=61, count=1)[0]
    keystore.wrap_and_store(TENANT, {ref: os.urandom(16)})
    keystore.rotate_kek(TENANT)
    rewrap.rewrap_tenant(TENANT)
    assert _destroyed_versions(vault, ref.path) == {1: True, 2: False}


def test_more_keys_than_one_transit_request_may_carry_are_wrapped_and_unwrapped(vault, vault_calls):
    """OpenBao refuses a body with more than 1,000 JSON strings (4 per batch item): 300 keys take 2 calls."""
    keystore.ensure_kek(TENANT)
    keys = {}
    for card_id in range(100, 175):
        keys.update({ref: os.urandom(16) for ref in _refs(card_id=card_id, count=4)})
    vault_calls.clear()
    keystore.wrap_and_store(TENANT, keys)
    assert len([c for c in vault_calls if "/encrypt/" in c[1]]) == 2
    with keystore.unwrap(TENANT, list(keys)) as plain:
        assert {r: bytes(k) for r, k in plain.items()} == keys


def test_a_first_write_assumed_new_skips_the_read_and_falls_back_when_the_secret_exists(vault, vault_calls):
    keystore.ensure_kek(TENANT)
    first, second = _refs(card_id=70, count=2)
    vault_calls.clear()
    keystore.wrap_and_store(TENANT, {first: b"\x01" * 16}, assume_new=True)
    assert [c for c in vault_calls if c[1].startswith("secret/")] == [("POST", f"secret/data/{first.path}")]
    # wrong guess: the secret exists, cas=0 is refused, the blob is added by read-modify-write
    vault_calls.clear()
    keystore.wrap_and_store(TENANT, {second: b"\x02" * 16}, assume_new=True)
    assert [c for c in vault_calls if c[1].startswith("secret/")] == [
        ("POST", f"secret/data/{first.path}"), ("GET", f"secret/data/{first.path}"),
        ("POST", f"secret/data/{first.path}")]
    with keystore.unwrap(TENANT, [first, second]) as plain:
        assert (bytes(plain[first]), bytes(plain[second])) == (b"\x01" * 16, b"\x02" * 16)
    with pytest.raises(KeystoreError, match="refusing to overwrite"):
        keystore.wrap_and_store(TENANT, {first: b"\x03" * 16}, assume_new=True)


def test_master_ciphertexts_are_cached_and_read_again_when_a_rewrap_elsewhere_made_them_stale(
        vault, vault_calls):
    keystore.ensure_kek(TENANT)
    ref = keystore.master_key_ref(tenant_id=TENANT, master_id=3, number=1)
    other = keystore.master_key_ref(tenant_id=TENANT, master_id=4, number=1)
    keystore.wrap_and_store(TENANT, {ref: b"\x33" * 16})
    with keystore.unwrap(TENANT, [ref]) as plain:
        assert plain[ref] == b"\x33" * 16
    vault_calls.clear()
    with keystore.unwrap(TENANT, [ref]) as plain:  # ciphertext from the cache: Transit only
        assert plain[ref] == b"\x33" * 16
    assert vault_calls == [("POST", f"transit/decrypt/{keystore.kek_name(TENANT)}")]
    # a write from this process (a master version added) drops its cached copy
    keystore.wrap_and_store(TENANT, {other: b"\x44" * 16})
    with keystore.unwrap(TENANT, [ref]):
        pass
    keystore._master_blobs.clear()  # noqa: SLF001
    with keystore.unwrap(TENANT, [ref]):
        pass
    stale = dict(keystore._master_blobs)  # noqa: SLF001 - what this process holds before another rewraps
    keystore.rotate_kek(TENANT)
    rewrap.rewrap_tenant(TENANT)  # min_decryption_version 2: the cached v1 ciphertexts no longer decrypt
    keystore._master_blobs.update(stale)  # noqa: SLF001 - as if the rewrap ran in another process
    vault_calls.clear()
    with keystore.unwrap(TENANT, [ref, other]) as plain:
        assert (bytes(plain[ref]), bytes(plain[other])) == (b"\x33" * 16, b"\x44" * 16)
    decrypt = ("POST", f"transit/decrypt/{keystore.kek_name(TENANT)}")
    assert vault_calls == [decrypt, ("GET", f"secret/data/{ref.path}"), decrypt]
    vault_calls.clear()
    with keystore.unwrap(TENANT, [ref, other]):
        pass
    assert vault_calls == [decrypt]


def test_pooled_keys_are_wrapped_ahead_in_one_batch_handed_out_once_and_unwrap_from_the_cache(
        vault, vault_calls):
    keystore.ensure_kek(TENANT)
    keystore.forget_pools()
    vault_calls.clear()
    first, second = keystore.pooled(TENANT, 2), keystore.pooled(TENANT, 3)
    encrypt = ("POST", f"transit/encrypt/{keystore.kek_name(TENANT)}")
    assert [c for c in vault_calls if "/encrypt/" in c[1]] == [encrypt]
    path = first[0].path
    assert path.startswith(f"{keystore.tenant_root(TENANT)}/pool/")
    # written blind (cas=0), never read
    assert [c for c in vault_calls if c[1].startswith("secret/")] == [("POST", f"secret/data/{path}")]
    refs = first + second
    assert len(set(refs)) == 5 and {ref.path for ref in refs} == {path}
    stored = _kv(vault, path)["data"]["data"]
    assert len(stored) == keystore.POOL_KEYS and all(ct.startswith("vault:v1:") for ct in stored.values())
    vault_calls.clear()
    with keystore.unwrap(TENANT, refs) as plain:
        assert len({bytes(plain[ref]) for ref in refs}) == 5 and all(len(plain[ref]) == 16 for ref in refs)
        held = {ref: bytes(plain[ref]) for ref in refs}
    assert vault_calls == [("POST", f"transit/decrypt/{keystore.kek_name(TENANT)}")]  # ciphertexts cached
    keystore.forget_cached_blobs()
    with keystore.unwrap(TENANT, refs) as plain:  # another process: reads the pool secret once
        assert {ref: bytes(plain[ref]) for ref in refs} == held
    # more than is left: a second pool secret, and nothing handed out twice
    more = keystore.pooled(TENANT, keystore.POOL_KEYS)
    assert len(set(more) | set(refs)) == keystore.POOL_KEYS + 5 and len({ref.path for ref in more}) == 2
