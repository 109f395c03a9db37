"""Key services on real OpenBao and the database: generation, import, diversification, unwrap, destruction."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from audit.models import AuditEvent
from cardproto import kdf
from keys import keystore, services
from keys.errors import KeyStateError, KeystoreError, KeystoreUnavailable
from keys.kcv import kcv
from keys.models import KeyVersion, MasterKeyVersion, VersionState

pytestmark = [pytest.mark.vault, pytest.mark.django_db]
h = bytes.fromhex
GP_TEST_KEY = h("404142434445464748494A4B4C4D4E4F")


def _events(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action).order_by("sequence"))


def test_random_keys_for_a_card_are_one_transit_batch_with_kcvs_and_one_audit_event_each(
        vault, vault_calls, desfire_slots):
    versions = services.key_versions_create_random(slots=desfire_slots)
    assert [v.number for v in versions] == [1, 1, 1, 1]
    assert {v.state for v in versions} == {VersionState.PENDING}
    assert len([c for c in vault_calls if "/encrypt/" in c[1]]) == 1
    assert len([c for c in vault_calls if c[0] == "POST" and "/data/" in c[1]]) == 1  # one KV write
    assert len({v.vault_ref.split("#")[0] for v in versions}) == 1  # all in the card's secret

    with services.card_keys_unwrap(versions=versions) as keys:
        for version in versions:
            assert version.kcv == kcv(keys[version.pk], "desfire")
    generated = _events("keys.key_generated")
    assert [(e.card_uid, e.key_no, e.key_version) for e in generated] == \
        [("04782E21801D80", s.key_no, 1) for s in desfire_slots]
    assert generated[1].aid == "100001" and generated[0].aid == ""
    assert len(_events("keys.kek_created")) == 1


def test_next_version_of_a_slot_gets_the_next_number_and_its_own_field(vault, desfire_slots):
    first = services.key_version_create_random(slot=desfire_slots[0])
    second = services.key_version_create_random(slot=desfire_slots[0], source="vault")
    assert (first.number, second.number) == (1, 2)
    assert first.vault_ref != second.vault_ref
    with services.card_keys_unwrap(versions=[first, second]) as keys:
        assert keys[first.pk] != keys[second.pk]
        assert second.kcv == kcv(keys[second.pk], "desfire")


def test_imported_isd_key_is_stored_wrapped_with_the_gp_kcv(vault, isd_slots):
    # osmocom/pysim SCP03_KCV_Test: AES key 00..0F has GP KCV C35280
    version = services.key_version_import(slot=isd_slots[0], key=h("000102030405060708090a0b0c0d0e0f"),
                                          number=0x30)
    assert (version.number, version.state, version.kcv) == (0x30, VersionState.ACTIVE, "C35280")
    with services.card_keys_unwrap(versions=[version]) as keys:
        assert keys[version.pk] == h("000102030405060708090a0b0c0d0e0f")
    assert _events("keys.key_imported")[0].key_version == 0x30


def test_isd_keys_diversified_with_kdf3_from_the_gp_test_master_match_globalplatformpro_kcvs(
        vault, tenant, isd_slots):
    # GlobalPlatformPro TestPlaintextKeys (KDF3, master 40..4F, KDD 00..09): KCVs E79C05 D1BD77 3FDE8C
    master = services.master_key_create(tenant=tenant, name="isd-kdf3", method="kdf3")
    master_version = services.master_key_version_import(master=master, key=GP_TEST_KEY)
    versions = [services.key_version_create_diversified(slot=slot, master_version=master_version)
                for slot in isd_slots]
    assert [v.kcv for v in versions] == ["E79C05", "D1BD77", "3FDE8C"]
    assert all(v.vault_ref == "" and v.master_version_id == master_version.pk for v in versions)


def test_one_unwrap_for_a_card_reads_two_secrets_and_decrypts_once_for_random_and_diversified_keys(
        vault, vault_calls, tenant, desfire_card, desfire_slots):
    master = services.master_key_create(tenant=tenant, name="amk", method="an10922")
    master_version = services.master_key_version_create(master=master)
    cmk = services.key_version_create_random(slot=desfire_slots[0])
    amk = services.key_version_create_diversified(slot=desfire_slots[1], master_version=master_version)
    keystore.forget_cached_blobs()  # as in a process that has not read the masters' ciphertexts yet
    vault_calls.clear()
    with services.card_keys_unwrap(versions=[cmk, amk], job_id="job-42") as keys:
        assert sorted(vault_calls) == sorted([
            ("GET", f"secret/data/{keystore.tenant_root(tenant.pk)}/cards/{desfire_card.pk}"),
            ("GET", f"secret/data/{keystore.tenant_root(tenant.pk)}/masters"),
            ("POST", f"transit/decrypt/{keystore.kek_name(tenant.pk)}")])
        with keystore.unwrap(tenant.pk, [keystore.BlobRef.parse(master_version.vault_ref)]) as m:
            # the layout we chose for AN10922's M: UID || AID || key number
            expected = kdf.an10922_aes128(m[keystore.BlobRef.parse(master_version.vault_ref)],
                                          h("04782E21801D80") + h("100001") + b"\x00")
        assert keys[amk.pk] == expected
        assert amk.kcv == kcv(expected, "desfire")
    event = _events("keys.unwrapped")[-1]
    assert event.job_id == "job-42" and event.card_uid == "04782E21801D80"
    assert sorted(event.details["refs"]) == sorted([cmk.vault_ref, master_version.vault_ref])


def test_keys_of_two_cards_are_not_unwrapped_together(vault, desfire_slots, isd_slots):
    a = services.key_version_create_random(slot=desfire_slots[0])
    b = services.key_version_create_random(slot=isd_slots[0])
    with pytest.raises(KeystoreError, match="one card at a time"):
        with services.card_keys_unwrap(versions=[a, b]):
            pass


def test_destroying_a_retired_version_erases_its_blob_and_is_audited(vault, desfire_slots):
    version = services.key_version_create_random(slot=desfire_slots[0])
    KeyVersion.objects.filter(pk=version.pk).update(state=VersionState.RETIRED,
                                                     grace_until=timezone.now() - timedelta(days=1))
    destroyed = services.key_version_destroy(version=version)
    assert destroyed.state == VersionState.DESTROYED and destroyed.destroyed_at is not None
    assert not keystore.exists(keystore.BlobRef.parse(version.vault_ref))
    event = _events("keys.key_destroyed")[0]
    assert (event.key_no, event.key_version, event.details["ref"]) == (0, 1, version.vault_ref)
    with pytest.raises(KeyStateError, match="destroyed"):
        with services.card_keys_unwrap(versions=[destroyed]):
            pass


@pytest.mark.parametrize(("state", "grace_days", "probe", "reason"), [
    (VersionState.ACTIVE, None, False, "active key version cannot"),
    (VersionState.RETIRED, 3, False, "grace period"),
    (VersionState.PENDING, None, True, "probe required"),
])
def test_versions_that_may_still_be_needed_are_not_destroyed(vault, desfire_slots, state, grace_days, probe,
                                                             reason):
    version = services.key_version_create_random(slot=desfire_slots[0])
    grace = timezone.now() + timedelta(days=grace_days) if grace_days else None
    KeyVersion.objects.filter(pk=version.pk).update(state=state, grace_until=grace)
    desfire_slots[0].card.__class__.objects.filter(pk=desfire_slots[0].card_id).update(probe_required=probe)
    with pytest.raises(KeyStateError, match=reason):
        services.key_version_destroy(version=version)
    assert keystore.exists(keystore.BlobRef.parse(version.vault_ref))
    assert not _events("keys.key_destroyed")


def test_master_version_in_use_by_card_keys_is_not_destroyed(vault, tenant, isd_slots):
    master = services.master_key_create(tenant=tenant, name="m", method="kdf3")
    master_version = services.master_key_version_import(master=master, key=GP_TEST_KEY)
    services.key_version_create_diversified(slot=isd_slots[0], master_version=master_version)
    MasterKeyVersion.objects.filter(pk=master_version.pk).update(state=VersionState.RETIRED)
    with pytest.raises(KeyStateError, match="still in use"):
        services.master_key_version_destroy(version=master_version)
    KeyVersion.objects.filter(master_version=master_version).update(state=VersionState.DESTROYED)
    services.master_key_version_destroy(version=master_version)
    assert not keystore.exists(keystore.BlobRef.parse(master_version.vault_ref))
    assert _events("keys.master_version_destroyed")


def test_kek_rotation_service_rewraps_all_keys_and_is_audited(vault, tenant, desfire_slots):
    versions = services.key_versions_create_random(slots=desfire_slots)
    master = services.master_key_create(tenant=tenant, name="m", method="an10922")
    services.master_key_version_create(master=master)
    report = services.tenant_kek_rotate(tenant=tenant)
    assert (report.kek_version, report.blobs_rewrapped, report.min_decryption_version) == (2, 5, 2)
    with services.card_keys_unwrap(versions=versions) as keys:
        assert all(v.kcv == kcv(keys[v.pk], "desfire") for v in versions)
    assert _events("keys.kek_rotated")[0].details["kek_version"] == 2
    assert _events("keys.rewrapped")[0].details["count"] == 5


def test_sealed_vault_rolls_back_key_creation_with_keystore_unavailable(vault, desfire_slots):
    vault.seal()
    with pytest.raises(KeystoreUnavailable):
        services.key_versions_create_random(slots=desfire_slots)
    assert not KeyVersion.objects.exists()
    assert not _events("keys.key_generated")


def test_sealed_vault_gives_no_keys_to_a_job(vault, desfire_slots):
    version = services.key_version_create_random(slot=desfire_slots[0])
    vault.seal()
    with pytest.raises(KeystoreUnavailable):
        with services.card_keys_unwrap(versions=[version], job_id="j1"):
            pytest.fail("no key may be handed out while Vault is sealed")


def test_unwrapped_keys_are_wiped_when_the_block_ends(vault, desfire_slots):
    versions = services.key_versions_create_random(slots=desfire_slots)
    with services.card_keys_unwrap(versions=versions) as keys:
        held = list(keys.values())
        assert all(any(k) for k in held)
    assert all(k == bytearray(16) for k in held)


def test_unwrapped_keys_never_show_their_bytes_in_repr_str_or_format(vault, isd_slots):
    key = h("101112131415161718191a1b1c1d1e1f")
    version = services.key_version_import(slot=isd_slots[0], key=key, number=1)
    with services.card_keys_unwrap(versions=[version]) as keys:
        shown = repr(keys) + str(keys[version.pk]) + f"{keys[version.pk]}" + repr(list(keys.values()))
        assert keys[version.pk] == key
    assert key.hex() not in shown.lower() and "\\x10\\x11" not in shown and "<key: 16 bytes>" in shown
