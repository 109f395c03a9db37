"""The key-version ledger as the compiler sees it: what a card holds and what its earlier jobs did."""
from __future__ import annotations

from cards.compiler import (
    CREATE_OPS,
    ISD_SLOTS,
    LIFE_CYCLE_OPS,
    REGISTRY_OPS,
    Held,
    Ledger,
    Plan,
    compile_plan,
)
from cards.models import Card
from cards.models.orders import JobState
from cards.services.jobs_common import NO_RESULT, NOT_A_CARD_ANSWER, POISON
from keys import campaigns
from keys.models import KeySlot, KeyVersion, MasterKey, MasterKeyVersion, VersionState

APPLICATION_NOT_FOUND = "91A0"


def slot_label(slot: KeySlot) -> str:
    if slot.role.startswith("isd_"):
        return {role: label for label, role, _, _ in ISD_SLOTS}[slot.role]
    if slot.application_id:
        return f"app.{slot.application.aid}.{slot.key_no}"
    return f"picc.{slot.key_no}"


def _tenant_masters(tenant_id: int) -> list[MasterKey]:
    """The tenant's master keys with their versions (two queries), each version knowing its master."""
    masters = list(MasterKey.objects.filter(tenant_id=tenant_id).prefetch_related("versions"))
    for master in masters:
        for version in master.versions.all():
            version.master = master
    return masters


def _active_versions(masters: list[MasterKey]) -> dict[int, MasterKeyVersion]:
    """Each master key's newest active version, by master id (masters without one are left out)."""
    found = {}
    for master in masters:
        active = [v for v in master.versions.all() if v.state == VersionState.ACTIVE]
        if active:
            found[master.pk] = max(active, key=lambda v: v.number)
    return found


def ledger_for(card: Card | None, tenant_id: int, *, masters: list[MasterKey] | None = None,
               new_card: bool = False) -> Ledger:
    """The compiler's view of a card: its key versions, its tenant's masters, what earlier jobs did.

    `masters`: the tenant's `_tenant_masters`, if the caller has them. `new_card`: the card was
    registered in the caller's transaction, so it has no versions and no jobs to read.
    """
    ledger = Ledger()
    masters = _tenant_masters(tenant_id) if masters is None else masters
    for master in masters:
        active = _active_versions([master]).get(master.pk)
        if active is not None:
            ledger.masters[master.name] = active.pk
    if card is None or card.pk is None:
        return ledger
    ledger.probe_required = card.probe_required
    if new_card:
        return ledger
    labels: dict[int, str] = {}
    for slot in KeySlot.objects.filter(card=card).select_related("application"):
        labels[slot.pk] = slot_label(slot)
    # a paused campaign's new versions are not sent: the card keeps its active key until it resumes
    withheld = campaigns.withheld_version_ids(card)
    for version in KeyVersion.objects.filter(slot__card=card, state__in=[VersionState.ACTIVE,
                                                                         VersionState.PENDING]).order_by("number"):
        if version.pk in withheld:
            continue
        held = Held(version.pk, version.number)
        target = ledger.active if version.state == VersionState.ACTIVE else ledger.pending
        target[labels[version.slot_id]] = held
    version_labels = {v.pk: labels[v.slot_id] for v in KeyVersion.objects.filter(slot__card=card)}
    absent_aids: set[str] = set()
    unknown: set[str] = set()  # create units whose answer was lost, until a listing settles them
    for job in card.jobs.filter(state__in=[JobState.SUCCEEDED, JobState.FAILED, JobState.INTERRUPTED]) \
            .order_by("created_at"):
        steps = (job.script or {}).get("steps", [])
        if (job.error or {}).get("kind") in (NO_RESULT, POISON):
            # the job may have run without its result ever arriving: every key change it carried is
            # unknown until a probe says otherwise
            for step in steps:
                ledger.in_flight.update(version_labels[i] for i in _confirmed_ids(step.get("confirms"))
                                        if i in version_labels)
                if step.get("op") in CREATE_OPS and step.get("label"):
                    unknown.add(step["label"])
                if step.get("op") in LIFE_CYCLE_OPS and step.get("label"):
                    ledger.unknown_life_cycle.add(step["label"])
                if step.get("op") in REGISTRY_OPS and step.get("label"):
                    ledger.unknown_registry.add(step["label"])
            continue
        registry: dict[str, list] = {}  # a registry probe's listings: label -> AIDs
        for entry in (job.result or {}).get("steps", []):
            index = entry.get("index")
            if not isinstance(index, int) or not 0 <= index < len(steps):
                continue
            step = steps[index]
            if entry.get("status") == "done" and step.get("label"):
                ledger.done.add(step["label"])
                _settle_creates(step, entry.get("observed") or {}, unknown, ledger.done)
                if step["label"] == "probe.life_cycle":
                    _settle_life_cycle(ledger, entry.get("observed") or {})
                if step["label"].startswith("probe.registry.") \
                        and isinstance((entry.get("observed") or {}).get("aids"), list):
                    registry[step["label"]] = entry["observed"]["aids"]
            if entry.get("status") == "in_flight" and step.get("op") in LIFE_CYCLE_OPS and step.get("label"):
                ledger.unknown_life_cycle.add(step["label"])
            if entry.get("status") == "in_flight" and step.get("op") in REGISTRY_OPS and step.get("label"):
                ledger.unknown_registry.add(step["label"])
            if entry.get("status") == "in_flight":
                for version_id in _confirmed_ids(step.get("confirms")):
                    if version_id in version_labels:
                        ledger.in_flight.add(version_labels[version_id])
        error = job.error or {}
        at = error.get("step")
        failed = steps[at] if isinstance(at, int) and 0 <= at < len(steps) else {}
        if failed.get("op") in CREATE_OPS and failed.get("label") and error.get("kind") in NOT_A_CARD_ANSWER:
            unknown.add(failed["label"])  # sent, no answer: the card may have created it
        if failed.get("op") in LIFE_CYCLE_OPS and failed.get("label") \
                and error.get("kind") in NOT_A_CARD_ANSWER:
            ledger.unknown_life_cycle.add(failed["label"])
        if failed.get("op") in REGISTRY_OPS and failed.get("label") \
                and error.get("kind") in NOT_A_CARD_ANSWER:
            ledger.unknown_registry.add(failed["label"])  # sent, no answer: the card may have done it
        if len(registry) == 2:
            _settle_registry(ledger, {str(aid).upper() for aids in registry.values() for aid in aids})
        if _is_probe(job.script) and failed.get("op") == "desfire.select_application" \
                and str(error.get("sw", "")).upper() == APPLICATION_NOT_FOUND:
            absent_aids.add(str(failed.get("aid", "")).upper())  # never created: its keys are the defaults
    ledger.in_flight = {label for label in ledger.in_flight
                        if not any(label.startswith(f"app.{aid}.") for aid in absent_aids)}
    ledger.unknown_creates = unknown - ledger.done
    ledger.unknown_life_cycle -= ledger.done
    ledger.unknown_registry -= ledger.done
    return ledger


def _settle_creates(step: dict, observed: dict, unknown: set[str], done: set[str]) -> None:
    """A probe listing answers the lost creates it covers: listed -> done, not listed -> to create again."""
    label = str(step.get("label", ""))
    if label == "probe.aids" and isinstance(observed.get("aids"), list):
        present = {f"{aid:06X}" for aid in observed["aids"] if isinstance(aid, int)}
        for unit in [u for u in unknown if u.endswith(".create") and u.count(".") == 2]:
            aid = unit.split(".")[1]
            unknown.discard(unit)
            if aid in present:
                done.add(unit)
            else:  # never created: none of its files can exist either
                unknown.difference_update({u for u in unknown if u.startswith(f"app.{aid}.file.")})
    elif label.startswith("probe.files.") and isinstance(observed.get("file_ids"), list):
        aid = label[len("probe.files."):]
        for unit in [u for u in unknown if u.startswith(f"app.{aid}.file.")]:
            unknown.discard(unit)
            if int(unit.split(".")[3]) in observed["file_ids"]:
                done.add(unit)


def _settle_life_cycle(ledger: Ledger, observed: dict) -> None:
    """A life cycle probe answers every lost STORE DATA / SET STATUS before it: the compiler skips what
    the life cycle proves done and sends the rest again. A refused GET STATUS ("refused_sw") proves
    nothing: 6985 is ISO 7816-4's generic "conditions of use not satisfied", and GP 2.3 11.4 names no
    6985 for GET STATUS (its own errors are 6A88 and 6A80), so it is not read as CARD_LOCKED: the life
    cycle stays unknown and the card waits for a person (LIFE_CYCLE_UNKNOWN in _apply_result)."""
    life_cycle = observed.get("life_cycle")
    if isinstance(life_cycle, int) and not isinstance(life_cycle, bool):
        ledger.life_cycle = life_cycle
        ledger.unknown_life_cycle.clear()


def _settle_registry(ledger: Ledger, present: set[str]) -> None:
    """A registry probe (GET STATUS of the applications and of the load files) answers every lost INSTALL /
    DELETE before it: an instance listed was installed, an AID no longer listed was deleted (done); the
    others are sent again."""
    for unit in list(ledger.unknown_registry):
        kind, _, aid = unit.partition(".")
        ledger.unknown_registry.discard(unit)
        if (aid.upper() in present) == (kind == "install"):  # installed and listed, or deleted and gone
            ledger.done.add(unit)


def _confirmed_ids(confirms) -> list[int]:
    if not isinstance(confirms, dict):
        return []
    ids = confirms.get("key_versions") or []
    if "key_version" in confirms:
        ids = [confirms["key_version"], *ids]
    return [i for i in ids if isinstance(i, int) and not isinstance(i, bool)]


def _is_probe(script: dict) -> bool:
    steps = (script or {}).get("steps", [])
    return bool(steps) and any(str(s.get("label", "")).startswith("probe.") for s in steps)


def plan_for(card: Card, profile) -> Plan:
    return compile_plan(card, profile, ledger_for(card, card.tenant_id))
