"""A job's keys: pending versions for a plan, every ref unwrapped in ONE Vault batch, sealed to a station.

Key refs (the names a script uses, see jobproto.md):

- ``kv-<KeyVersion.id>``: a card key version, random (its own blob) or diversified (its master
  version's blob, derived in memory with AN10922 / KDF3).
- ``mkv-<MasterKeyVersion.id>-<role>``: a key derived from a master version that has no KeyVersion
  row (a transport key set): role ``isd_enc`` / ``isd_mac`` / ``isd_dek`` (KDF3) or ``cmk``
  (AN10922, key 0 at PICC level) derive per card; role ``static`` is the master key itself (the
  same imported transport key on every card, like the GP test key 40..4F).
- ``default-<key_type>``: a DESFire factory default key (all zero bytes of that type).

Plain keys only ever exist as `KeyBytes` inside the context manager, which wipes them on exit.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import timedelta

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from django.conf import settings
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from audit.services import EventBatch, record_event
from keys import keystore
from keys.errors import KeyStateError, KeystoreError
from keys.kcv import kcv, scheme_for_role
from keys.models import KeyPolicy, KeySlot, KeyVersion, MasterKeyVersion, VersionState
from keys.services import _source_ref, derive_card_key, tenant_kek_ensure
from readeragent import protocol

_KV = re.compile(r"^kv-(?P<id>[0-9]{1,18})$")
_MKV = re.compile(r"^mkv-(?P<id>[0-9]{1,18})-(?P<role>static|cmk|isd_enc|isd_mac|isd_dek)$")
_DEFAULT = re.compile(r"^default-(?P<type>aes128|2k3des|3k3des)$")
DEFAULT_KEY_LENGTH = {"aes128": 16, "2k3des": 16, "3k3des": 24}
_MKV_KEY_NO = {"cmk": 0, "isd_enc": 1, "isd_mac": 2, "isd_dek": 3}


def kv_ref(version: KeyVersion | int) -> str:
    return f"kv-{version if isinstance(version, int) else version.pk}"


def mkv_ref(master_version: MasterKeyVersion | int, role: str) -> str:
    pk = master_version if isinstance(master_version, int) else master_version.pk
    return f"mkv-{pk}-{role}"


def default_ref(key_type: str) -> str:
    return f"default-{key_type}"


def parse_ref(ref: str) -> tuple[str, str | int, str]:
    """("kv", id, "") | ("mkv", id, role) | ("default", key_type, ""); KeystoreError otherwise."""
    if match := _KV.match(ref):
        return "kv", int(match["id"]), ""
    if match := _MKV.match(ref):
        return "mkv", int(match["id"]), match["role"]
    if match := _DEFAULT.match(ref):
        return "default", match["type"], ""
    raise KeystoreError(f"not a key ref: {ref!r}")


# --- pending versions for a plan ------------------------------------------------------------------

_kek_known: set[tuple[str, str, int]] = set()


def _ensure_kek_once(tenant, actor) -> None:
    """The tenant KEK is checked (and created, audited) once per process and Vault, not once per card."""
    key = (settings.VAULT_ADDR, settings.VAULT_PREFIX, tenant.pk)
    if key not in _kek_known:
        tenant_kek_ensure(tenant=tenant, actor=actor)
        _kek_known.add(key)


def _record(events: EventBatch | None, **fields) -> None:
    """Into the caller's batch (appended with the job's other events), else straight onto the chain."""
    if events is not None:
        events.add(**fields)
    else:
        record_event(**fields)


def _event(action: str, version: KeyVersion, slot: KeySlot, *, actor, job_id: str, details: dict,
           events: EventBatch | None) -> None:
    _record(events, action=action, actor=actor, tenant=slot.tenant, job_id=job_id, card_uid=slot.card.uid,
            aid=slot.application.aid if slot.application_id else "", key_no=slot.key_no,
            key_version=version.number, details={"role": slot.role, "policy": version.policy, **details})


@transaction.atomic(savepoint=False)  # in a caller's transaction: a failure here aborts all of it
def key_versions_create_pending(*, slots: Sequence[KeySlot], actor=None, job_id: str = "",
                                keep: dict[str, keystore.KeyBytes] | None = None,
                                events: EventBatch | None = None, new_slots: bool = False,
                                master_versions: Mapping[int, MasterKeyVersion] | None = None,
                                pooled: bool = False) -> list[KeyVersion]:
    """One new pending version per slot of ONE card, with as few Vault round trips as the keystore allows.

    Random slots: generated here, wrapped in one Transit batch, stored with one KV write (as
    keys.services does); with `keep`, the plain keys are also handed to the caller under their
    ``kv-<id>`` refs, so the job need not read them back from Vault (the caller wipes them).
    Diversified slots: rows naming the master's active version; their KCV is filled in by
    `job_keys_unwrap` from the same batch that unwraps the job's keys.

    `new_slots`: the caller inserted these slots in its own transaction (a card registered just now),
    with `tenant`, `card`, `application` and `master` set on them: no other transaction can see them,
    so they are neither locked nor asked for their versions (each gets number 1).
    `master_versions`: each master key's newest active version (by master id), as the caller read it
    in this transaction, instead of reading them again.
    `pooled`: random keys come from `keystore.pooled` (generated, wrapped and stored ahead, many at a
    time) instead of being generated and stored here; their KCV is computed by `job_keys_unwrap`,
    which unwraps them in the job's one batch (the caller must unwrap them before it commits).
    """
    if not slots:
        return []
    if new_slots:
        locked = {s.pk: s for s in slots}
    else:
        locked = {s.pk: s for s in KeySlot.objects.select_for_update(of=("self",)).select_related(
            "tenant", "card", "application", "master").filter(pk__in=[s.pk for s in slots])}
    if len({s.card_id for s in locked.values()}) != 1:
        raise KeystoreError("pending key versions are created one card at a time")
    ordered = [locked[s.pk] for s in slots]
    numbers = {slot.pk: 1 for slot in ordered} if new_slots else _next_numbers(ordered)
    versions: list[KeyVersion] = []
    random = [s for s in ordered if s.policy == KeyPolicy.RANDOM]
    diversified = [s for s in ordered if s.policy == KeyPolicy.DIVERSIFIED]
    masters = _active_master_versions(diversified, master_versions) if diversified else {}
    diversified_rows = [KeyVersion(slot=slot, number=numbers[slot.pk], state=VersionState.PENDING,
                                   policy=KeyPolicy.DIVERSIFIED, master_version=masters[slot.master_id])
                        for slot in diversified]
    if random and pooled:
        tenant = random[0].tenant
        _ensure_kek_once(tenant, actor)
        rows = [KeyVersion(slot=slot, number=numbers[slot.pk], state=VersionState.PENDING,
                           policy=KeyPolicy.RANDOM, vault_ref=str(ref))
                for slot, ref in zip(random, keystore.pooled(tenant.pk, len(random)), strict=True)]
        KeyVersion.objects.bulk_create(rows + diversified_rows)  # one INSERT for both kinds
        for version, slot in zip(rows, random, strict=True):
            versions.append(version)
            _event("keys.key_generated", version, slot, actor=actor, job_id=job_id, events=events,
                   details={"ref": version.vault_ref, "source": "cms-pool",
                            "kcv": "computed at first unwrap"})
    elif random:
        tenant = random[0].tenant
        _ensure_kek_once(tenant, actor)
        plan = [(slot, keystore.card_key_ref(tenant_id=tenant.pk, card_id=slot.card_id, slot_id=slot.pk,
                                             number=numbers[slot.pk])) for slot in random]
        # a card's first versions most likely go to a secret that does not exist yet: written blind (cas=0)
        first = all(numbers[slot.pk] == 1 for slot in random)
        with keystore.generate(tenant.pk, [ref for _, ref in plan], replace=True, assume_new=first) as keys:
            rows = [KeyVersion(slot=slot, number=numbers[slot.pk], state=VersionState.PENDING,
                               policy=KeyPolicy.RANDOM, vault_ref=str(ref),
                               kcv=kcv(keys[ref], scheme_for_role(slot.role))) for slot, ref in plan]
            KeyVersion.objects.bulk_create(rows + diversified_rows)  # one INSERT for both kinds
            for version, (slot, ref) in zip(rows, plan, strict=True):
                if keep is not None:
                    keep[kv_ref(version)] = keystore.KeyBytes(keys[ref])
                versions.append(version)
                _event("keys.key_generated", version, slot, actor=actor, job_id=job_id, events=events,
                       details={"ref": version.vault_ref, "source": "cms", "kcv": version.kcv})
    elif diversified_rows:
        KeyVersion.objects.bulk_create(diversified_rows)
    for version, slot in zip(diversified_rows, diversified, strict=True):
        master_version = masters[slot.master_id]
        versions.append(version)
        _event("keys.key_diversified", version, slot, actor=actor, job_id=job_id, events=events,
               details={"master_key": slot.master.name, "master_version": master_version.number,
                        "method": slot.master.method, "kcv": "computed at first unwrap"})
    return versions


def _next_numbers(slots: Sequence[KeySlot]) -> dict[int, int]:
    """The next version number of each slot (as keys.services._next_number), in one query."""
    tops = dict(KeyVersion.objects.filter(slot_id__in=[s.pk for s in slots]).values("slot_id")
                .annotate(top=Max("number")).values_list("slot_id", "top"))
    numbers = {slot.pk: (tops.get(slot.pk) or 0) + 1 for slot in slots}
    for pk, number in numbers.items():
        if number > 255:
            raise KeyStateError(f"slot {pk} has used every key version number (1..255)")
    return numbers


def _active_master_versions(slots: Sequence[KeySlot], known: Mapping[int, MasterKeyVersion] | None = None,
                            ) -> dict[int, MasterKeyVersion]:
    """Each diversified slot's master key's newest active version, in one query (none if `known`)."""
    for slot in slots:
        if slot.master is None:
            raise KeyStateError(f"slot {slot.pk} is diversified but names no master key")
    found: dict[int, MasterKeyVersion] = {}
    if known is not None:
        found = {s.master_id: known[s.master_id] for s in slots if s.master_id in known}
    else:
        active = MasterKeyVersion.objects.filter(master_id__in={s.master_id for s in slots},
                                                 state=VersionState.ACTIVE).order_by("master_id", "-number")
        for version in active:
            found.setdefault(version.master_id, version)
    for slot in slots:
        if slot.master_id not in found:
            raise KeyStateError(f"master key {slot.master.name} has no active version")
    return found


# --- unwrap for a job -------------------------------------------------------------------------------

@contextmanager
def job_keys_unwrap(*, card, refs: Iterable[str], job_id: str = "", actor=None,
                    known: Mapping[str, bytearray] | None = None,
                    events: EventBatch | None = None,
                    loaded: Iterable[KeyVersion] = ()) -> Iterator[dict[str, keystore.KeyBytes]]:
    """Every ref of a job's script as plain keys, from ONE Transit batch decrypt; wiped on exit.

    All refs must belong to `card` (its key versions, or master versions of its tenant). One
    audit event names every Vault reference before any key is produced. Refs in `known` (keys
    this process has just generated and stored) are copied from there instead of read back.
    With `events`, the unwrap event joins the caller's batch: it is appended in the caller's
    transaction, which commits (and sends the job) only if the event is written.
    `loaded`: key versions the caller read (or created) in this transaction, with their slot (and
    its card, application, tenant) and master version (and its master) attached: not read again.
    """
    wanted = set(refs)
    known = {ref: key for ref, key in (known or {}).items() if ref in wanted}
    refs = sorted(wanted - set(known))
    parsed = {ref: parse_ref(ref) for ref in refs}
    kv_ids = [ident for kind, ident, _ in parsed.values() if kind == "kv"]
    mkv_ids = [ident for kind, ident, _ in parsed.values() if kind == "mkv"]
    versions = {v.pk: v for v in loaded if v.pk in set(kv_ids)}
    unread = [ident for ident in kv_ids if ident not in versions]
    if unread:
        versions.update((v.pk, v) for v in KeyVersion.objects.select_related(
            "slot__card", "slot__application", "slot__tenant", "master_version__master"
        ).filter(pk__in=unread))
    masters = {m.pk: m for m in MasterKeyVersion.objects.select_related("master").filter(pk__in=mkv_ids)}
    for ident in kv_ids:
        version = versions.get(ident)
        if version is None or version.slot.card_id != card.pk:
            raise KeystoreError(f"kv-{ident} is not a key version of card {card.uid}")
        if version.state == VersionState.DESTROYED:
            raise KeyStateError(f"kv-{ident} is destroyed")
    for ident in mkv_ids:
        master_version = masters.get(ident)
        if master_version is None or master_version.master.tenant_id != card.tenant_id:
            raise KeystoreError(f"mkv-{ident} is not a master key version of the card's tenant")
        if master_version.state not in (VersionState.ACTIVE, VersionState.PENDING):
            raise KeyStateError(f"mkv-{ident} is {master_version.state}")
    sources: dict[str, keystore.BlobRef] = {}
    for ref, (kind, ident, _) in parsed.items():
        if kind == "kv":
            sources[ref] = _source_ref(versions[ident])
        elif kind == "mkv":
            sources[ref] = keystore.BlobRef.parse(masters[ident].vault_ref)
    if sources:
        with transaction.atomic(savepoint=False):
            _record(events, action="keys.unwrapped", actor=actor, tenant=card.tenant, job_id=job_id,
                    card_uid=card.uid, details={"refs": sorted({str(r) for r in sources.values()}),
                                                "count": len(sources), "purpose": "job"})
    out: dict[str, keystore.KeyBytes] = {ref: keystore.KeyBytes(key) for ref, key in known.items()}
    try:
        with keystore.unwrap(card.tenant_id, set(sources.values())) as plain:
            new_kcvs: list[KeyVersion] = []
            for ref, (kind, ident, role) in parsed.items():
                if kind == "default":
                    out[ref] = keystore.KeyBytes(DEFAULT_KEY_LENGTH[ident])
                elif kind == "mkv":
                    master_version = masters[ident]
                    if role == "static":
                        out[ref] = keystore.KeyBytes(plain[sources[ref]])
                    else:
                        derived = derive_card_key(master=plain[sources[ref]],
                                                  method=master_version.master.method, uid=card.uid,
                                                  kdd=card.kdd, role=role, key_no=_MKV_KEY_NO[role])
                        out[ref] = keystore.KeyBytes(derived)
                        derived[:] = bytes(len(derived))
                else:
                    version = versions[ident]
                    slot = version.slot
                    if version.policy == KeyPolicy.DIVERSIFIED:
                        derived = derive_card_key(master=plain[sources[ref]],
                                                  method=version.master_version.master.method, uid=card.uid,
                                                  kdd=card.kdd, role=slot.role, key_no=slot.key_no,
                                                  aid=slot.application.aid if slot.application_id else "")
                        out[ref] = keystore.KeyBytes(derived)
                        derived[:] = bytes(len(derived))
                        if not version.kcv:
                            version.kcv = kcv(out[ref], scheme_for_role(slot.role))
                            new_kcvs.append(version)
                    else:
                        out[ref] = keystore.KeyBytes(plain[sources[ref]])
                        if not version.kcv:  # a key from the pool: first unwrapped now
                            version.kcv = kcv(out[ref], scheme_for_role(slot.role))
                            new_kcvs.append(version)
            if new_kcvs:
                KeyVersion.objects.bulk_update(new_kcvs, ["kcv"])
            yield out
    finally:
        for key in out.values():
            key[:] = bytes(len(key))


def seal_for_station(keys: dict[str, bytearray], *, hpke_public_key_hex: str, job_id: str, station: str,
                     expires_at: int) -> str:
    """HPKE-seal the job's keys to the station's enrolled X25519 key, bound to job, station and expiry."""
    public_key = X25519PublicKey.from_public_bytes(bytes.fromhex(hpke_public_key_hex))
    return protocol.seal_keys(keys, public_key=public_key, job_id=job_id, station=station,
                              expires_at=expires_at)


def version_activate(version: KeyVersion, *, grace_days: int, actor=None, job_id: str = "",
                     evidence: dict | None = None, audit: bool = True,
                     events: EventBatch | None = None) -> dict | None:
    """pending -> active because the card confirmed it; the slot's previous active version retires with grace.

    Returns what changed ({"key_version", "kcv", "retired", "grace_until"}) or None if the version
    was not pending. Runs inside the caller's transaction, rows locked. With `audit=False` the
    caller records the change in its own event (the card step that confirmed it), in the same
    transaction: one event per confirmation instead of three.
    """
    return versions_activate([version], grace_days=grace_days, actor=actor, job_id=job_id,
                             evidence=evidence, audit=audit, events=events)[0]


def versions_activate(versions: Sequence[KeyVersion], *, grace_days: int, actor=None, job_id: str = "",
                      evidence: dict | None = None, audit: bool = True,
                      events: EventBatch | None = None,
                      card_versions: Mapping[int, KeyVersion] | None = None) -> list[dict | None]:
    """`version_activate` for several versions (of different slots) at once: the rows locked in one
    query, the predecessors retired in one UPDATE and the versions activated in another. One change
    (or None) per version given, in order.

    `card_versions`: every version of the card (by id), which the caller has locked in this
    transaction with their slot (and its tenant, card, application) attached; the versions given and
    their predecessors are then taken from it instead of being locked and read again.
    """
    if not versions:
        return []
    if card_versions is not None:
        locked = {v.pk: card_versions[v.pk] for v in versions if v.pk in card_versions}
    else:
        locked = {v.pk: v for v in KeyVersion.objects.select_for_update(of=("self",)).select_related(
            "slot__tenant", "slot__card", "slot__application").filter(pk__in={v.pk for v in versions})}
    pending = {pk: v for pk, v in locked.items() if v.state == VersionState.PENDING}
    slot_ids = [v.slot_id for v in pending.values()]
    if len(set(slot_ids)) != len(slot_ids):
        raise KeyStateError("two pending versions of one slot cannot both become active")
    if not pending:
        previous = {}
    elif card_versions is not None:
        previous = {v.slot_id: v for v in card_versions.values()
                    if v.slot_id in set(slot_ids) and v.state == VersionState.ACTIVE}
    else:
        previous = {v.slot_id: v for v in KeyVersion.objects.select_for_update(of=("self",))
                    .filter(slot_id__in=slot_ids, state=VersionState.ACTIVE)}
    now = timezone.now()
    grace_until = now + timedelta(days=grace_days)
    if previous:
        KeyVersion.objects.filter(pk__in=[v.pk for v in previous.values()]).update(
            state=VersionState.RETIRED, retired_at=now, grace_until=grace_until)
    if pending:
        KeyVersion.objects.filter(pk__in=list(pending)).update(state=VersionState.ACTIVE, activated_at=now)
    changes: list[dict | None] = []
    for given in versions:
        version = pending.pop(given.pk, None)
        if version is None:
            changes.append(None)
            continue
        version.state, version.activated_at = VersionState.ACTIVE, now
        change: dict = {"key_version": version.number, "kcv": version.kcv}
        slot = version.slot
        common = {"tenant": slot.tenant, "job_id": job_id, "card_uid": slot.card.uid,
                  "aid": slot.application.aid if slot.application_id else "", "key_no": slot.key_no}
        before = previous.get(version.slot_id)
        if before is not None:
            before.state, before.retired_at, before.grace_until = VersionState.RETIRED, now, grace_until
            change.update(retired=before.number, grace_until=grace_until.isoformat())
            if audit:
                _record(events, action="keys.key_retired", actor=actor, key_version=before.number,
                        details={"role": slot.role, "grace_until": grace_until.isoformat(),
                                 "successor": version.number}, **common)
        if audit:
            _record(events, action="keys.key_activated", actor=actor, key_version=version.number,
                    details={"role": slot.role, "kcv": version.kcv, "evidence": evidence or {}}, **common)
        changes.append(change)
    return changes


__all__ = ["default_ref", "job_keys_unwrap", "key_versions_create_pending", "kv_ref", "mkv_ref",
           "parse_ref", "seal_for_station", "version_activate", "versions_activate"]
