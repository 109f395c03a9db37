"""Key services: tenant KEKs, random / imported / diversified key versions, unwrap for a job, destruction.

Each service changes the database and Vault together and writes its audit event in the same
database transaction. The database keeps references, versions, states and KCVs only. Vault
work happens inside the transaction, so a Vault failure (KeystoreUnavailable) rolls the rows
back; a database failure after Vault stored a blob leaves an unreferenced blob, which the next
attempt at the same version number replaces (the slot's row lock proves nobody recorded it).
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from audit.services import record_event
from cardproto import kdf
from cards.models import Tenant
from keys import keystore, rewrap
from keys.errors import KeyStateError, KeystoreError
from keys.kcv import kcv, scheme_for_role
from keys.models import (
    DiversificationMethod,
    KeyPolicy,
    KeyRole,
    KeySlot,
    KeyVersion,
    MasterKey,
    MasterKeyVersion,
    VersionState,
)


def _locked_slots():
    # of=("self",): PostgreSQL cannot lock the nullable side of the outer join to application
    return KeySlot.objects.select_for_update(of=("self",)).select_related("tenant", "card", "application")


KDF3_LABELS = {KeyRole.ISD_ENC: kdf.ENC, KeyRole.ISD_MAC: kdf.MAC, KeyRole.ISD_DEK: kdf.DEK}


# --- Tenant KEK ---------------------------------------------------------------------------------

@transaction.atomic
def tenant_kek_ensure(*, tenant: Tenant, actor=None) -> bool:
    """Create the tenant's Transit KEK if missing (audited); True when it was created now."""
    created = keystore.ensure_kek(tenant.pk)
    if created:
        record_event(action="keys.kek_created", actor=actor, tenant=tenant,
                     details={"kek_name": keystore.kek_name(tenant.pk), "algorithm": "aes256-gcm96"})
    return created


@transaction.atomic
def rewrap_tenant(*, tenant: Tenant, actor=None,
                  batch_size: int = keystore.DEFAULT_BATCH) -> rewrap.RewrapReport:
    """Rewrap every blob of the tenant to the latest KEK version, then raise min_decryption_version."""
    report = rewrap.rewrap_tenant(tenant.pk, batch_size=batch_size)
    record_event(action="keys.rewrapped", actor=actor, tenant=tenant, details={
        "kek_version": report.kek_version, "secret_count": report.secrets,
        "count": report.blobs_rewrapped, "min_decryption_version": report.min_decryption_version})
    return report


def tenant_kek_rotate(*, tenant: Tenant, actor=None, batch_size: int = keystore.DEFAULT_BATCH
                      ) -> rewrap.RewrapReport:
    """New KEK version, every blob rewrapped in batches, older KEK versions no longer decrypt."""
    with transaction.atomic():
        version = keystore.rotate_kek(tenant.pk)
        record_event(action="keys.kek_rotated", actor=actor, tenant=tenant, details={"kek_version": version})
    return rewrap_tenant(tenant=tenant, actor=actor, batch_size=batch_size)


# --- Card key versions ----------------------------------------------------------------------------

def _next_number(slot: KeySlot) -> int:
    current = slot.versions.aggregate(top=Max("number"))["top"]
    number = 1 if current is None else current + 1
    if number > 255:
        raise KeyStateError(f"slot {slot.pk} has used every key version number (1..255)")
    return number


def _slot_event(action: str, version: KeyVersion, *, actor, details: dict) -> None:
    slot = version.slot
    record_event(action=action, actor=actor, tenant=slot.tenant, card_uid=slot.card.uid,
                 aid=slot.application.aid if slot.application_id else "", key_no=slot.key_no,
                 key_version=version.number, details={"role": slot.role, "policy": version.policy, **details})


@transaction.atomic
def key_versions_create_random(*, slots: Sequence[KeySlot], actor=None, source: str = "cms",
                               state: str = VersionState.PENDING) -> list[KeyVersion]:
    """A new random key version for each slot of ONE card: one Transit batch, one KV write."""
    if not slots:
        return []
    locked = list(_locked_slots().filter(pk__in=[s.pk for s in slots]).order_by("pk"))
    if len({s.card_id for s in locked}) != 1:
        raise KeystoreError("random key versions are created one card at a time")
    tenant = locked[0].tenant
    tenant_kek_ensure(tenant=tenant, actor=actor)
    plan = []
    for slot in locked:
        number = _next_number(slot)
        plan.append((slot, number, keystore.card_key_ref(tenant_id=tenant.pk, card_id=slot.card_id,
                                                         slot_id=slot.pk, number=number)))
    versions = []
    with keystore.generate(tenant.pk, [ref for _, _, ref in plan], source=source, replace=True) as keys:
        for slot, number, ref in plan:
            version = KeyVersion.objects.create(
                slot=slot, number=number, state=state, policy=KeyPolicy.RANDOM,
                kcv=kcv(keys[ref], scheme_for_role(slot.role)), vault_ref=str(ref))
            versions.append(version)
    for version in versions:
        _slot_event("keys.key_generated", version, actor=actor,
                    details={"ref": version.vault_ref, "source": source, "kcv": version.kcv})
    return versions


@transaction.atomic
def key_versions_create_batch(*, slots: Sequence[KeySlot], actor=None,
                              master_version: MasterKeyVersion | None = None) -> list[KeyVersion]:
    """A new pending version for each slot of MANY cards of one tenant, in ONE Transit batch.

    Random (no `master_version`): the keys are generated here and wrapped in one batch (one KV
    write per card). Diversified: the master version is unwrapped once and each card key is
    derived in memory for its KCV. Used by rotation campaigns, one call per batch of cards.
    """
    if not slots:
        return []
    locked = list(_locked_slots().filter(pk__in=[s.pk for s in slots]).order_by("pk"))
    tenants = {s.tenant_id for s in locked}
    if len(tenants) != 1:
        raise KeystoreError("a batch of key versions belongs to one tenant")
    tenant = locked[0].tenant
    plan = [(slot, _next_number(slot)) for slot in locked]
    versions: list[KeyVersion] = []
    if master_version is None:
        tenant_kek_ensure(tenant=tenant, actor=actor)
        refs = {slot.pk: keystore.card_key_ref(tenant_id=tenant.pk, card_id=slot.card_id, slot_id=slot.pk,
                                               number=number) for slot, number in plan}
        with keystore.generate(tenant.pk, list(refs.values()), replace=True) as keys:
            for slot, number in plan:
                ref = refs[slot.pk]
                versions.append(KeyVersion.objects.create(
                    slot=slot, number=number, state=VersionState.PENDING, policy=KeyPolicy.RANDOM,
                    kcv=kcv(keys[ref], scheme_for_role(slot.role)), vault_ref=str(ref)))
        for version in versions:
            _slot_event("keys.key_generated", version, actor=actor,
                        details={"ref": version.vault_ref, "source": "cms", "kcv": version.kcv})
        return versions
    master = master_version.master
    if master.tenant_id != tenant.pk:
        raise KeystoreError("a master key of another tenant cannot diversify these slots")
    if master_version.state not in (VersionState.PENDING, VersionState.ACTIVE):
        raise KeyStateError(f"master key version {master_version.number} is {master_version.state}")
    source = keystore.BlobRef.parse(master_version.vault_ref)
    record_event(action="keys.unwrapped", actor=actor, tenant=tenant, details={
        "refs": [str(source)], "count": len(plan), "purpose": "kcv"})
    with keystore.unwrap(tenant.pk, [source]) as plain:
        for slot, number in plan:
            derived = derive_card_key(master=plain[source], method=master.method, uid=slot.card.uid,
                                      kdd=slot.card.kdd, role=slot.role, key_no=slot.key_no,
                                      aid=slot.application.aid if slot.application_id else "")
            try:
                check = kcv(derived, scheme_for_role(slot.role))
            finally:
                derived[:] = bytes(len(derived))
            versions.append(KeyVersion.objects.create(
                slot=slot, number=number, state=VersionState.PENDING, policy=KeyPolicy.DIVERSIFIED,
                master_version=master_version, kcv=check))
    for version in versions:
        _slot_event("keys.key_diversified", version, actor=actor, details={
            "master_key": master.name, "master_version": master_version.number, "method": master.method,
            "kcv": version.kcv})
    return versions


@transaction.atomic
def key_versions_restore_batch(*, versions: Sequence[KeyVersion], actor=None) -> list[KeyVersion]:
    """For each (retired) version, a NEW pending version on its slot holding the SAME key.

    This is how a rotated card is re-keyed back: the compiler rotates a card to a pending
    version newer than its active one, so the old key comes back under a new version number.
    Random keys: the old blobs are unwrapped in ONE Transit batch and wrapped again under the new
    references in ONE batch; diversified keys simply name the same master key version.
    """
    if not versions:
        return []
    sources = list(KeyVersion.objects.filter(pk__in=[v.pk for v in versions])
                   .select_related("master_version").order_by("pk"))
    locked = {s.pk: s for s in _locked_slots().filter(pk__in={v.slot_id for v in sources})}
    tenants = {slot.tenant_id for slot in locked.values()}
    if len(tenants) != 1:
        raise KeystoreError("restored key versions belong to one tenant")
    tenant_id = tenants.pop()
    for source in sources:
        if source.state == VersionState.DESTROYED:
            raise KeyStateError(f"slot {source.slot_id} v{source.number} is destroyed: its key is gone")
    plan = [(source, locked[source.slot_id], _next_number(locked[source.slot_id])) for source in sources]
    created: list[KeyVersion] = []
    randoms = [(source, slot, number) for source, slot, number in plan if source.policy == KeyPolicy.RANDOM]
    new_refs: dict[int, keystore.BlobRef] = {}
    if randoms:
        record_event(action="keys.unwrapped", actor=actor, tenant=randoms[0][1].tenant,
                     details={"refs": sorted(v.vault_ref for v, _, _ in randoms), "count": len(randoms),
                              "purpose": "restore"})
        new_refs = {source.pk: keystore.card_key_ref(tenant_id=tenant_id, card_id=slot.card_id,
                                                     slot_id=slot.pk, number=number)
                    for source, slot, number in randoms}
        old_refs = {v.pk: keystore.BlobRef.parse(v.vault_ref) for v, _, _ in randoms}
        with keystore.unwrap(tenant_id, old_refs.values()) as plain:
            keystore.wrap_and_store(tenant_id, {new_refs[pk]: plain[ref] for pk, ref in old_refs.items()},
                                    replace=True)
    for source, slot, number in plan:
        version = KeyVersion.objects.create(
            slot=slot, number=number, state=VersionState.PENDING, policy=source.policy, kcv=source.kcv,
            vault_ref=str(new_refs[source.pk]) if source.policy == KeyPolicy.RANDOM else "",
            master_version=source.master_version)
        created.append(version)
        _slot_event("keys.key_restored", version, actor=actor,
                    details={"same_key_as": source.number, "ref": version.vault_ref, "kcv": version.kcv})
    return created


def key_version_create_random(*, slot: KeySlot, actor=None, source: str = "cms",
                              state: str = VersionState.PENDING) -> KeyVersion:
    return key_versions_create_random(slots=[slot], actor=actor, source=source, state=state)[0]


@transaction.atomic
def key_version_import(*, slot: KeySlot, key: bytes | bytearray, number: int, actor=None,
                       state: str = VersionState.ACTIVE) -> KeyVersion:
    """Record a KNOWN key the card already holds (e.g. the GP test key 40..4F of a demo card)."""
    slot = _locked_slots().get(pk=slot.pk)
    if slot.versions.filter(number=number).exists():
        raise KeyStateError(f"slot {slot.pk} already has version {number}")
    tenant_kek_ensure(tenant=slot.tenant, actor=actor)
    ref = keystore.card_key_ref(tenant_id=slot.tenant_id, card_id=slot.card_id, slot_id=slot.pk,
                                number=number)
    keystore.wrap_and_store(slot.tenant_id, {ref: key}, replace=True)
    version = KeyVersion.objects.create(slot=slot, number=number, state=state, policy=KeyPolicy.RANDOM,
                                        kcv=kcv(key, scheme_for_role(slot.role)), vault_ref=str(ref),
                                        activated_at=timezone.now() if state == VersionState.ACTIVE else None)
    _slot_event("keys.key_imported", version, actor=actor,
                details={"ref": version.vault_ref, "kcv": version.kcv})
    return version


@transaction.atomic
def key_version_create_diversified(*, slot: KeySlot, master_version: MasterKeyVersion, actor=None,
                                   state: str = VersionState.PENDING) -> KeyVersion:
    """A version derived from a master key version; its KCV is computed once from the derived key."""
    slot = _locked_slots().get(pk=slot.pk)
    if master_version.master.tenant_id != slot.tenant_id:
        raise KeystoreError("a master key of another tenant cannot diversify this slot")
    if master_version.state not in (VersionState.PENDING, VersionState.ACTIVE):
        raise KeyStateError(f"master key version {master_version.number} is {master_version.state}")
    number = _next_number(slot)
    version = KeyVersion.objects.create(slot=slot, number=number, state=state, policy=KeyPolicy.DIVERSIFIED,
                                        master_version=master_version)
    with card_keys_unwrap(versions=[version], actor=actor, purpose="kcv") as keys:
        version.kcv = kcv(keys[version.pk], scheme_for_role(slot.role))
    version.save(update_fields=["kcv"])
    _slot_event("keys.key_diversified", version, actor=actor, details={
        "master_key": master_version.master.name, "master_version": master_version.number,
        "method": master_version.master.method, "kcv": version.kcv})
    return version


@transaction.atomic
def key_version_destroy(*, version: KeyVersion, actor=None, ignore_grace: bool = False) -> KeyVersion:
    """Destroy a retired (or never-sent pending) version: its blob is erased from Vault for good."""
    version = KeyVersion.objects.select_for_update(of=("self",)).select_related(
        "slot__tenant", "slot__card", "slot__application").get(pk=version.pk)
    slot = version.slot
    if version.state == VersionState.RETIRED:
        if version.grace_until and version.grace_until > timezone.now() and not ignore_grace:
            raise KeyStateError(f"version {version.number} is in its grace period "
                                f"until {version.grace_until:%Y-%m-%d %H:%M}")
    elif version.state == VersionState.PENDING:
        if slot.card.probe_required:
            raise KeyStateError("the card may hold this pending key (probe required): not destroyed")
    else:
        raise KeyStateError(f"a {version.state} key version cannot be destroyed")
    if version.vault_ref:
        keystore.remove(slot.tenant_id, [keystore.BlobRef.parse(version.vault_ref)])
    version.state, version.destroyed_at = VersionState.DESTROYED, timezone.now()
    version.save(update_fields=["state", "destroyed_at"])
    _slot_event("keys.key_destroyed", version, actor=actor, details={"ref": version.vault_ref})
    return version


# --- Master keys ----------------------------------------------------------------------------------

@transaction.atomic
def master_key_create(*, tenant: Tenant, name: str, method: str, actor=None) -> MasterKey:
    master = MasterKey.objects.create(tenant=tenant, name=name, method=DiversificationMethod(method))
    record_event(action="keys.master_created", actor=actor, tenant=tenant,
                 details={"master_key": name, "method": master.method})
    return master


def _master_version_row(master: MasterKey, number: int | None) -> tuple[MasterKey, int, keystore.BlobRef]:
    master = MasterKey.objects.select_for_update(of=("self",)).select_related("tenant").get(pk=master.pk)
    if number is None:
        top = master.versions.aggregate(top=Max("number"))["top"]
        number = 1 if top is None else top + 1
    if not 1 <= number <= 255:
        raise KeyStateError("master key version numbers are 1..255")
    if master.versions.filter(number=number).exists():
        raise KeyStateError(f"master key {master.name} already has version {number}")
    ref = keystore.master_key_ref(tenant_id=master.tenant_id, master_id=master.pk, number=number)
    return master, number, ref


def _master_event(action: str, version: MasterKeyVersion, *, actor, details: dict) -> None:
    record_event(action=action, actor=actor, tenant=version.master.tenant, key_version=version.number,
                 details={"master_key": version.master.name, "ref": version.vault_ref, **details})


@transaction.atomic
def master_key_version_create(*, master: MasterKey, actor=None, source: str = "cms",
                              state: str = VersionState.PENDING) -> MasterKeyVersion:
    """A new random AES-128 master key version, generated in the CMS or by Vault, stored wrapped."""
    master, number, ref = _master_version_row(master, None)
    tenant_kek_ensure(tenant=master.tenant, actor=actor)
    with keystore.generate(master.tenant_id, [ref], source=source, replace=True) as keys:
        version = MasterKeyVersion.objects.create(master=master, number=number, state=state,
                                                  kcv=kcv(keys[ref], "desfire"), vault_ref=str(ref))
    _master_event("keys.master_version_generated", version, actor=actor, details={"source": source,
                                                                                   "kcv": version.kcv})
    return version


@transaction.atomic
def master_key_version_import(*, master: MasterKey, key: bytes | bytearray, number: int | None = None,
                              actor=None, state: str = VersionState.ACTIVE) -> MasterKeyVersion:
    """Import a known master key (a transport key such as the GP test key 40..4F for demo cards)."""
    master, number, ref = _master_version_row(master, number)
    if len(key) != 16:
        raise KeystoreError("master keys are AES-128 (16 bytes)")
    tenant_kek_ensure(tenant=master.tenant, actor=actor)
    keystore.wrap_and_store(master.tenant_id, {ref: key}, replace=True)
    version = MasterKeyVersion.objects.create(
        master=master, number=number, state=state, kcv=kcv(key, "desfire"), vault_ref=str(ref),
        activated_at=timezone.now() if state == VersionState.ACTIVE else None)
    _master_event("keys.master_version_imported", version, actor=actor, details={"kcv": version.kcv})
    return version


@transaction.atomic
def master_key_version_destroy(*, version: MasterKeyVersion, actor=None) -> MasterKeyVersion:
    version = (MasterKeyVersion.objects.select_for_update(of=("self",)).select_related("master__tenant")
               .get(pk=version.pk))
    if version.state != VersionState.RETIRED:
        raise KeyStateError(f"a {version.state} master key version cannot be destroyed")
    if version.derived_versions.exclude(state=VersionState.DESTROYED).exists():
        raise KeyStateError("card keys derived from this master version are still in use")
    keystore.remove(version.master.tenant_id, [keystore.BlobRef.parse(version.vault_ref)])
    version.state, version.destroyed_at = VersionState.DESTROYED, timezone.now()
    version.save(update_fields=["state", "destroyed_at"])
    _master_event("keys.master_version_destroyed", version, actor=actor, details={})
    return version


# --- Using keys -----------------------------------------------------------------------------------

class DiversificationContextError(KeystoreError):
    """The card lacks the data a diversification method needs (no guessing, no padding)."""


def gp_diversification_context(*, uid: str, kdd: str = "") -> bytes:
    """The 10 bytes JCOP ISD keys are diversified with: the card's KDD, else a 10-byte UID.

    The KDD (GET DATA 'CF', the first 10 bytes of the INITIALIZE UPDATE answer, GP Card Spec 2.3)
    is what issuers diversify with; a reader's UID (FF CA) is mostly 7 bytes. A shorter UID is
    never padded: which padding an issuer used is unknowable, and a wrong guess bricks the card.
    """
    if kdd:
        context = bytes.fromhex(kdd)
        if len(context) != 10:
            raise DiversificationContextError(f"the card's KDD is {len(context)} bytes, not 10")
        return context
    context = bytes.fromhex(uid)
    if len(context) != 10:
        raise DiversificationContextError(
            f"JCOP key diversification needs the card's 10-byte KDD (GET DATA CF) or a 10-byte UID; "
            f"the card has a {len(context)}-byte UID and no KDD")
    return context


def derive_card_key(*, master: bytes | bytearray, method: str, uid: str, role: str, key_no: int,
                    aid: str = "", kdd: str = "") -> bytearray:
    """A card's key from a master key, in memory (the caller wipes it).

    AN10922 AES-128 (DESFire): M = UID || AID (3 bytes, 000000 at PICC level) || key number,
    our system's choice of the application note's "UID || AID || system identifier".
    KDF3 (JCOP ISD): label 1/2/3 for ENC/MAC/DEK, context = the card's 10-byte KDD, else its UID
    when that is 10 bytes (seed 002; see gp_diversification_context).
    """
    if method == DiversificationMethod.AN10922:
        aid_bytes = bytes.fromhex(aid) if aid else bytes(3)
        return kdf.an10922_aes128(master, bytes.fromhex(uid) + aid_bytes + bytes((key_no,)))
    if method == DiversificationMethod.KDF3:
        if role not in KDF3_LABELS:
            raise KeystoreError("KDF3 derives JCOP ISD keys (ENC, MAC, DEK) only")
        return kdf.kdf3_jcop(master, KDF3_LABELS[role], gp_diversification_context(uid=uid, kdd=kdd))
    raise KeystoreError(f"unknown diversification method {method!r}")


@contextmanager
def card_keys_unwrap(*, versions: Sequence[KeyVersion], actor=None, job_id: str = "",
                     purpose: str = "job") -> Iterator[dict[int, keystore.KeyBytes]]:
    """The plain keys of one card's key versions by version id, from ONE Vault batch; wiped on exit.

    Random versions unwrap their own blobs; diversified ones unwrap their master version in the
    same batch and derive in memory. One audit event names every reference before any key is
    yielded (if it cannot be written, no key is handed out).
    """
    versions = list(versions)
    if not versions:
        yield {}
        return
    slots = {v.slot_id: v.slot for v in versions}
    tenants = {s.tenant_id for s in slots.values()}
    cards = {s.card_id for s in slots.values()}
    if len(tenants) != 1 or len(cards) != 1:
        raise KeystoreError("keys are unwrapped one card at a time")
    for version in versions:
        if version.state == VersionState.DESTROYED:
            raise KeyStateError(f"key version {version.number} of slot {version.slot_id} is destroyed")
    tenant_id = tenants.pop()
    if any(v.pk is None for v in versions):
        raise KeystoreError("only saved key versions can be unwrapped")
    refs = {v.pk: _source_ref(v) for v in versions}
    slot = next(iter(slots.values()))
    with transaction.atomic():
        record_event(action="keys.unwrapped", actor=actor, tenant=slot.tenant, job_id=job_id,
                     card_uid=slot.card.uid, details={"refs": sorted({str(r) for r in refs.values()}),
                                                      "count": len(versions), "purpose": purpose})
    out: dict[int, keystore.KeyBytes] = {}
    try:
        with keystore.unwrap(tenant_id, set(refs.values())) as plain:
            for version in versions:
                if version.policy == KeyPolicy.DIVERSIFIED:
                    s = version.slot
                    derived = derive_card_key(
                        master=plain[refs[version.pk]], method=version.master_version.master.method,
                        uid=s.card.uid, kdd=s.card.kdd, role=s.role, key_no=s.key_no,
                        aid=s.application.aid if s.application_id else "")
                    out[version.pk] = keystore.KeyBytes(derived)
                    derived[:] = bytes(len(derived))
                else:
                    out[version.pk] = keystore.KeyBytes(plain[refs[version.pk]])
            yield out
    finally:
        for key in out.values():
            key[:] = bytes(len(key))


def _source_ref(version: KeyVersion) -> keystore.BlobRef:
    if version.policy == KeyPolicy.DIVERSIFIED:
        master_version = version.master_version
        if master_version is None or master_version.state == VersionState.DESTROYED:
            raise KeyStateError(f"slot {version.slot_id} v{version.number}: "
                                "its master version is unavailable")
        return keystore.BlobRef.parse(master_version.vault_ref)
    if not version.vault_ref:
        raise KeyStateError(f"slot {version.slot_id} v{version.number} has no wrapped key")
    return keystore.BlobRef.parse(version.vault_ref)
