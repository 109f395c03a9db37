"""Provisioning jobs: a signed station report becomes a sealed, signed job; the result moves the ledger.

Two entry points, called by the thin Celery tasks in cards/tasks.py (queue "cms"):

- `station_report_handle(report)`: heartbeat / card_presented / card_removed from a station agent.
- `job_result_handle(result)`: the agent's signed result of one job.

Anything that does not verify (unknown or unapproved station, bad signature, stale report, result
of another station, unknown or finished job) is refused with an audit event and changes nothing.
Keys: unwrapped from Vault in ONE batch per job (keys.sealing), sealed to the station with HPKE,
wiped on the way out; the job itself is signed by Vault Transit (keys.signing).
"""
from __future__ import annotations

import hashlib
import ipaddress
import re
import time
from collections.abc import Callable
from datetime import timedelta

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, OperationalError, transaction
from django.db.models import Case, Exists, F, OuterRef, Q, Value, When
from django.utils import timezone

from audit.errors import AuditUnavailable
from audit.services import EventBatch, record_event
from cardproto.sw import describe
from cards.compiler import (
    AUTH_OPS,
    CREATE_OPS,
    ISD_SLOTS,
    LIFE_CYCLE_OPS,
    REGISTRY_OPS,
    Held,
    Ledger,
    Plan,
    PlanError,
    compile_plan,
    slot_specs,
)
from cards.models import Application, Card, CardFile, Job, Order, Station
from cards.models.cards import AppKind, CardState, ChipType
from cards.models.orders import JobState, OrderState
from cards.models.stations import StationStatus
from cards.validators import normalise_hex, validate_uid
from cms import failpoints
from cms.errors import KeystoreUnavailable
from keys import campaigns, sealing, signing
from keys.models import (
    DiversificationMethod,
    KeyPolicy,
    KeySlot,
    KeyVersion,
    MasterKey,
    MasterKeyVersion,
    VersionState,
)
from keys.models_campaigns import CampaignItem, RotationCampaign
from keys.services import DiversificationContextError
from readeragent import protocol

log = structlog.get_logger(__name__)

REPORT_TYPES = ("card_presented", "card_removed", "heartbeat")
REPORT_MAX_SKEW_SECONDS = 300
STATION_SEEN_RESOLUTION = 1.0  # seconds: a station's last_seen_at is written at most once a second
RESULT_STATES = (JobState.SUCCEEDED, JobState.FAILED, JobState.INTERRUPTED, JobState.REFUSED)
OPEN_JOB_STATES = (JobState.CREATED, JobState.DISPATCHED, JobState.RUNNING)
REFUSED_CARD_STATES = (CardState.QUARANTINED, CardState.REVOKED, CardState.SUSPENDED)
# The agent's error kinds (exception class names) that mean the card refused our key or cryptogram.
# A PUT KEY whose key check values differ leaves keys on the card that nobody knows: a person looks.
AUTH_FAILURE_KINDS = frozenset({"AuthenticationError", "AuthenticationRejectedError", "CryptogramError",
                                "CryptogramMismatchError", "KcvMismatchError"})
NOT_A_CARD_ANSWER = frozenset({"CardRemovedError", "TransportError"})
NO_RESULT = "NoResult"  # error kind of a job that expired without a result
POISON = "poison"  # error kind of a job delivered more than CMS_JOB_MAX_DELIVERIES times, never finished
APPLICATION_NOT_FOUND = "91A0"
STEP_ACTIONS = {
    "desfire.authenticate": "card.authenticated", "gp.open_scp03": "card.authenticated",
    "gp.open_scp02": "card.authenticated", "desfire.change_key": "card.key_changed",
    "gp.put_key": "card.key_put", "desfire.write_data": "card.file_written",
    "desfire.write_record": "card.file_written", "desfire.credit": "card.file_written",
    "gp.store_data": "card.data_stored", "desfire.create_application": "card.application_created",
    "desfire.create_file": "card.file_created", "desfire.change_key_settings": "card.key_settings_changed",
    "gp.install": "card.applet_installed", "gp.delete": "card.applet_deleted", "gp.lock_card": "card.locked",
    "gp.set_status": "card.status_set",
    "desfire.get_key_version": "card.probed", "gp.key_information": "card.probed",
    "desfire.get_application_ids": "card.probed", "desfire.get_file_ids": "card.probed",
}
LISTING_OPS = frozenset({"desfire.get_application_ids", "desfire.get_file_ids", "gp.get_status"})


class Refused(Exception):
    """A report or result that is not acted on; `reason` is a short code for the audit trail."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def job_ttl_seconds() -> int:
    """How long sealed keys stay valid: CMS_JOB_TTL_SECONDS (default 30 s).

    Seed 002 recommends 5 s for a station on the factory floor; 30 s leaves room for a queue
    that is briefly behind. Shorter is safer; the agent refuses an expired job.
    """
    return settings.CMS_JOB_TTL_SECONDS


def _station_event(action: str, station: Station | None, *, code: str = "", result: str = "success",
                   events: EventBatch | None = None, **fields) -> None:
    (events.add if events is not None else record_event)(
        action=action, actor_type="station", actor_name=station.code if station else (code or "?"),
        tenant=station.tenant if station else None, result=result, **fields)


def _refuse(action: str, station: Station | None, exc: Refused, *, code: str = "", **fields) -> dict:
    details = {"reason": exc.reason, "message": str(exc)[:300], **fields.pop("details", {})}
    with transaction.atomic():
        _station_event(action, station, code=code, result="failure", details=details, **fields)
    log.warning(action, reason=exc.reason, station=station.code if station else code)
    return {"status": "refused", "reason": exc.reason}


class AlreadyMade(Exception):
    """The report was handled before: its job exists (a redelivered report task)."""

    def __init__(self, job_id: str):
        super().__init__(job_id)
        self.job_id = job_id


def _verify_station_signature(document: dict, station: Station, what: str) -> None:
    if not station.sign_public_key:
        raise Refused("signature", f"station {station.code} has no enrolled signing key")
    try:
        key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(station.sign_public_key))
        protocol.verify_signature(document, key, what)
    except protocol.ProtocolError as exc:
        raise Refused(exc.reason, str(exc)) from None
    except ValueError:
        raise Refused("signature", f"station {station.code}'s enrolled key is unusable") from None


# --- station reports -----------------------------------------------------------------------------------

def station_report_handle(report: dict) -> dict:
    """Verify a station's signed report and act on it; returns a JSON-safe summary (no secrets)."""
    code = report.get("station") if isinstance(report, dict) else None
    station = Station.objects.select_related("tenant").filter(code=code).first() if isinstance(code, str) \
        else None
    try:
        if not isinstance(report, dict) or report.get("v") != protocol.PROTOCOL_VERSION:
            raise Refused("malformed", "a report is an object with v=1")
        if report.get("type") not in REPORT_TYPES:
            raise Refused("malformed", f"unknown report type {report.get('type')!r}")
        if station is None:
            raise Refused("station", f"no station {str(code)[:50]!r}")
        if station.status != StationStatus.APPROVED:
            raise Refused("station", f"station {station.code} is {station.status}, not approved")
        _verify_station_signature(report, station, "report")
        at = report.get("at")
        if not isinstance(at, int | float) or abs(time.time() - at) > REPORT_MAX_SKEW_SECONDS:
            raise Refused("stale", "the report's time is more than 5 minutes off")
    except Refused as exc:
        return _refuse("station.report_refused", station, exc, code=str(code or "")[:50],
                       details={"type": str(report.get("type"))[:20] if isinstance(report, dict) else ""})
    now = timezone.now()
    seen = station.last_seen_at
    if seen is None or (now - seen).total_seconds() >= STATION_SEEN_RESOLUTION:
        # a write (its own commit) per report only when the stored time is stale: online means seen
        # within 3 heartbeats, so a second's resolution loses nothing
        Station.objects.filter(pk=station.pk).update(last_seen_at=now)
    _note_station_ip(station, report.get("ips"))
    if report["type"] == "heartbeat":
        return {"status": "ok"}
    if report["type"] == "card_removed":
        log.info("station.card_removed", station=station.code, uid=str(report.get("uid", ""))[:20])
        return {"status": "ok"}
    return card_presented(station=station, report=report)


def report_unserved(report: dict, exc: Exception) -> dict:
    """The last try of a station report failed on a backing service (Vault sealed or unreachable, the audit
    key, the database): nothing was written, its transaction rolled back. A heartbeat is simply dropped. A
    card presented at a verified station is refused in the audit trail (`card.presentation_refused`, reason
    `unavailable`) when the trail can be written, so the card that got no job is explained; it gets its job
    when it is presented again after the service is back (tests/faults/test_vault_seal.py)."""
    kind = type(exc).__name__
    reason = str(exc)[:200] if isinstance(exc, KeystoreUnavailable | AuditUnavailable) else kind
    code = report.get("station") if isinstance(report, dict) else None
    uid = normalise_hex(str(report.get("uid", "")))[:20] if isinstance(report, dict) else ""
    if not isinstance(report, dict) or report.get("type") != "card_presented":
        log.warning("station.report_dropped", station=str(code)[:50], error=kind)
        return {"status": "dropped", "reason": "unavailable"}
    try:
        station = Station.objects.select_related("tenant").filter(code=str(code)).first()
        if station is None or station.status != StationStatus.APPROVED:
            raise Refused("station", "unknown or unapproved station")
        _verify_station_signature(report, station, "report")
        return _refuse("card.presentation_refused", station,
                       Refused("unavailable", f"{reason}: nothing was sent; present the card again"),
                       card_uid=uid)
    except (Refused, *FOLLOW_UP_LATER) as again:
        log.error("card.presentation_unserved", station=str(code)[:50], uid=uid, error=kind,
                  audit=type(again).__name__)
        return {"status": "refused", "reason": "unavailable", "audited": False}


def usable_ip(ips) -> str | None:
    """The first address of a report's signed "ips" that says where the station is: not loopback,
    link-local, multicast or unspecified (the agent lists the one routing outwards first)."""
    if not isinstance(ips, list):
        return None
    for text in ips[:16]:
        try:
            ip = ipaddress.ip_address(str(text)[:64])
        except ValueError:
            continue
        if not (ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_unspecified):
            return str(ip)
    return None


def _note_station_ip(station: Station, ips) -> None:
    """Store the station's reported address as `last_ip` (the alert rules compare it); audit a change."""
    ip = usable_ip(ips)
    if ip is None or ip == station.last_ip:
        return
    with transaction.atomic():
        changed = Station.objects.filter(pk=station.pk).exclude(last_ip=ip).update(last_ip=ip)
        if changed:
            _station_event("station.ip_changed", station,
                           details={"ip": ip, "previous": station.last_ip or ""})
    station.last_ip = ip


def _presentation_key(station: Station, report: dict) -> str:
    material = f"{station.code}|{report.get('uid')}|{report.get('nonce')}|{report.get('at')}"
    return hashlib.sha256(material.encode()).hexdigest()


def card_presented(*, station: Station, report: dict) -> dict:
    """A card at an approved station: find or register it, match an order, and send it a job."""
    uid = normalise_hex(str(report.get("uid", "")))
    try:
        validate_uid(uid)
    except ValidationError:
        return _refuse("card.presentation_refused", station, Refused("malformed", "the UID is not 4, 7 or "
                                                                     "10 bytes of hex"))
    kdd = normalise_hex(str(report.get("kdd") or ""))
    if kdd and (len(kdd) != 20 or not all(c in "0123456789ABCDEF" for c in kdd)):
        return _refuse("card.presentation_refused", station,
                       Refused("malformed", "the KDD is not 10 bytes of hex"), card_uid=uid)
    key = _presentation_key(station, report)
    try:
        job, envelope = _prepare_job(station=station, uid=uid, atr=normalise_hex(str(report.get("atr", ""))),
                                     chip_hint=report.get("chip_type"), presentation_key=key, kdd=kdd)
    except AlreadyMade as made:
        return {"status": "duplicate", "job": made.job_id}
    except Refused as exc:
        action = "card.kdd_changed" if exc.reason == "kdd_changed" else "card.presentation_refused"
        return _refuse(action, station, exc, card_uid=uid)
    except IntegrityError:
        # the same report again, whose job has finished (its presentation key is unique), or the card
        # registered by a concurrent presentation (the report is retried: the card is found then)
        existing = Job.objects.filter(presentation_key=key).first()
        if existing is None:
            raise
        return {"status": "duplicate", "job": str(existing.id)}
    if job is None:
        # the card holds what its order and ledger ask: named, so the worker's log says which card it was
        return {"status": "nothing_to_do", "card": uid}
    return {"status": "dispatched", "job": str(job.id), "probe": _is_probe(job.script)}


# --- building a job ------------------------------------------------------------------------------------

def _chip_type(hint, card: Card | None, order: Order) -> str:
    if card is not None:
        return card.chip_type
    if isinstance(hint, str) and hint in ChipType.values and order.profile.accepts_chip(hint):
        return hint
    return ChipType.JCOP4 if order.profile.chip_family == "jcop" else ChipType.DESFIRE_EV2


UNCOUNTED_JOB_STATES = (JobState.REFUSED, JobState.CANCELLED)  # a card whose jobs all are is not claimed


def _holds_claim(order_id: int, card_id: int, *, other_than=None) -> bool:
    """Whether the card has a job under the order that counts in its `cards_claimed`."""
    jobs = Job.objects.filter(order_id=order_id, card_id=card_id).exclude(state__in=UNCOUNTED_JOB_STATES)
    if other_than is not None:
        jobs = jobs.exclude(pk=other_than)
    return jobs.exists()


def _claim_order(order: Order, card: Card, *, new_card: bool) -> None:
    """Take one of the order's cards in one UPDATE, which locks the order row until this transaction
    commits: `cards_claimed` is compared with the quantity and raised under that lock, so two stations
    sharing a batch order never take more cards than it has (the unlocked read in _match_order only picks
    the order). A card the order already holds (a resume) takes nothing new."""
    open_order = Order.objects.filter(pk=order.pk, state__in=[OrderState.OPEN, OrderState.IN_PROGRESS])
    now = timezone.now()
    if not new_card and _holds_claim(order.pk, card.pk):
        taken = open_order.update(state=OrderState.IN_PROGRESS, updated_at=now)
    else:
        if not order.uids:  # an order naming its UIDs takes exactly those
            open_order = open_order.filter(Q(quantity__isnull=True) | Q(cards_claimed__lt=F("quantity")))
        taken = open_order.update(cards_claimed=F("cards_claimed") + 1, state=OrderState.IN_PROGRESS,
                                  updated_at=now)
    if not taken:
        current = Order.objects.only("state", "quantity").get(pk=order.pk)
        if current.state not in (OrderState.OPEN, OrderState.IN_PROGRESS):
            raise Refused("no_order", f"order {order.pk} is {current.state}")
        raise Refused("no_order", f"order {order.pk} has all its {current.quantity} cards")
    order.state = OrderState.IN_PROGRESS


def _release_claim(job: Job) -> None:
    """A job that will not count any more (refused): its card no longer takes one of the order's cards,
    unless another of its jobs under the order still does."""
    if job.order_id and not _holds_claim(job.order_id, job.card_id, other_than=job.pk):
        Order.objects.filter(pk=job.order_id, cards_claimed__gt=0).update(
            cards_claimed=F("cards_claimed") - 1)


def _restore_claim(job: Job) -> None:
    """A refused job that takes its late result counts again: the card ran it under the order (taken
    whatever the quantity: it is on the card)."""
    if job.order_id and not _holds_claim(job.order_id, job.card_id, other_than=job.pk):
        Order.objects.filter(pk=job.order_id).update(cards_claimed=F("cards_claimed") + 1)


def _match_order(station: Station, uid: str, card: Card | None) -> Order | None:
    """An order naming this UID first, then one for this station, then one for its line (oldest first)."""
    if card is not None:
        # A card already under an order keeps it until the order is finished (resume after an interruption).
        last = card.jobs.exclude(order=None).select_related("order__profile").order_by("-created_at").first()
        if last is not None and last.order.state in (OrderState.OPEN, OrderState.IN_PROGRESS) \
                and card.state != CardState.ACTIVE:
            return last.order
    orders = list(Order.objects.select_related("profile").filter(
        tenant_id=station.tenant_id, state__in=[OrderState.OPEN, OrderState.IN_PROGRESS]
    ).order_by("created_at"))
    named = [o for o in orders if uid in (o.uids or []) and o.station_id in (None, station.pk)]
    if named:
        return named[0]
    for order in orders:
        if order.uids:
            continue
        if order.station_id == station.pk or (order.station_id is None and order.line and
                                              order.line == station.line):
            if order.quantity is None or order.cards_claimed < order.quantity:
                return order
    return None


def _ensure_layout(card: Card, spec: dict, *, new_card: bool = False,
                   masters: list[MasterKey] | None = None) -> list[KeySlot]:
    """Applications, files and key slots the profile declares, recorded for this card (idempotent).

    The card's row is locked (or was just created) by the caller, so what is missing is inserted in
    one statement per table; a card just created has nothing yet and is not even asked. Returns the
    key slots inserted now, with their tenant, card, application and master attached.
    """
    apps: dict[str, Application] = {}
    if not new_card:
        apps = {a.aid: a for a in Application.objects.filter(card=card)}
    files = set() if new_card else set(CardFile.objects.filter(application__card=card)
                                       .values_list("application__aid", "file_no"))
    access_names = {"read": "read_key", "write": "write_key", "read_write": "read_write_key",
                    "change": "change_key"}
    app_specs = spec.get("applications", []) if spec["chip_family"] == "desfire" else []
    missing = [Application(card=card, aid=app["aid"].upper(), tenant_id=card.tenant_id, kind=AppKind.DESFIRE,
                           key_settings=app.get("key_settings", 0x0B), key_type=app.get("key_type", "aes128"),
                           num_keys=app.get("num_keys", max(len(app["keys"]), 1)))
               for app in app_specs if app["aid"].upper() not in apps]
    for application in Application.objects.bulk_create(missing):
        apps[application.aid] = application
    new_files = []
    for app in app_specs:
        aid = app["aid"].upper()
        for file in app.get("files", []):
            if (aid, file["file_no"]) in files:
                continue
            options = {k: file[k] for k in ("lower_limit", "upper_limit", "initial_value",
                                            "limited_credit", "free_get_value", "max_records") if k in file}
            new_files.append(CardFile(application=apps[aid], file_no=file["file_no"], file_type=file["type"],
                                      comm_mode=file.get("comm_mode", "full"),
                                      size=file.get("size", file.get("record_size", 0)), options=options,
                                      **{access_names[r]: file["access"][r] for r in access_names}))
    CardFile.objects.bulk_create(new_files)
    existing = set() if new_card else {(s.application_id, s.role, s.key_no)
                                       for s in KeySlot.objects.filter(card=card)}
    wanted = [s for s in slot_specs(spec)
              if ((apps[s.aid].pk if s.aid else None), s.role, s.key_no) not in existing]
    if masters is None:
        masters = list(MasterKey.objects.filter(tenant_id=card.tenant_id)) if any(s.master for s in wanted) \
            else []
    by_name = {m.name: m for m in masters}
    slots = []
    for spec_slot in wanted:
        master = by_name.get(spec_slot.master) if spec_slot.master else None
        if spec_slot.policy == KeyPolicy.DIVERSIFIED and master is None:
            raise Refused("profile", f"master key {spec_slot.master!r} does not exist")
        slots.append(KeySlot(tenant=card.tenant, card=card,
                             application=apps[spec_slot.aid] if spec_slot.aid else None,
                             role=spec_slot.role, key_no=spec_slot.key_no, policy=spec_slot.policy,
                             master=master if spec_slot.policy == KeyPolicy.DIVERSIFIED else None,
                             label=spec_slot.label))
    return KeySlot.objects.bulk_create(slots)


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


LIFE_CYCLE_UNKNOWN = "life_cycle_unknown"


def _settle_registry(ledger: Ledger, present: set[str]) -> None:
    """A registry probe (GET STATUS of the applications and of the load files) answers every lost INSTALL /
    DELETE before it: an instance listed was installed, an AID no longer listed was deleted (done); the
    others are sent again."""
    for unit in list(ledger.unknown_registry):
        kind, _, aid = unit.partition(".")
        ledger.unknown_registry.discard(unit)
        if (aid.upper() in present) == (kind == "install"):  # installed and listed, or deleted and gone
            ledger.done.add(unit)


def _life_cycle_refused(steps: list, entries: list, seen: dict[int, dict]) -> str | None:
    """The SW with which the card refused a life cycle probe of this result (None: none refused)."""
    for entry in entries:
        if entry["status"] == "done" and steps[entry["index"]].get("label") == "probe.life_cycle":
            refused = seen.get(entry["index"], {}).get("refused_sw")
            if refused:
                return str(refused)[:4]
    return None


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


def _stale_before():
    """Jobs created before this are past their expiry plus the agent's task time limit: no result can
    still be on its way that the station would have been allowed to produce."""
    return timezone.now() - timedelta(seconds=job_ttl_seconds() + settings.CELERY_TASK_TIME_LIMIT)


def jobs_expire_sweep() -> dict:
    """Beat (`cards.expire_jobs`): every open job that can no longer report is failed as NoResult and
    its card flagged for a probe now, not only when the card is next presented (the dashboard, the
    orders and the alert rules see it; the next presentation probes before anything else)."""
    card_ids = list(Job.objects.filter(state__in=OPEN_JOB_STATES, created_at__lt=_stale_before())
                    .values_list("card_id", flat=True).distinct()[:1000])
    expired = 0
    for card_id in card_ids:
        with transaction.atomic(), EventBatch() as events:
            card = Card.objects.select_for_update().filter(pk=card_id).first()
            if card is not None:
                expired += _expire_stale_jobs(card, events)
    return {"cards": len(card_ids), "expired": expired}


def _expire_stale_jobs(card: Card, events: EventBatch | None = None) -> int:
    """An open job past its expiry plus the task time limit never reported: assume the worst, probe next."""
    limit = _stale_before()
    count = 0
    for job in card.jobs.select_for_update().filter(state__in=OPEN_JOB_STATES, created_at__lt=limit):
        if job.deliveries > settings.CMS_JOB_MAX_DELIVERIES:
            _poison(job, card, events)
            count += 1
            continue
        job.move_to(JobState.FAILED)
        job.error = {"kind": NO_RESULT, "message": "no result arrived before the job's expiry"}
        job.finished_at = timezone.now()
        job.save(update_fields=["state", "error", "finished_at", "updated_at"])
        sent_key_changes = _sent_key_changes(job)
        if sent_key_changes:
            card.probe_required = True
            card.save(update_fields=["probe_required", "updated_at"])
        _station_event("job.expired", job.station, job_id=str(job.id), card_uid=card.uid, result="failure",
                       details={"probe_required": sent_key_changes}, events=events)
        count += 1
    return count


def _sent_key_changes(job: Job) -> bool:
    return any(s.get("confirms") or s.get("op") in CREATE_OPS for s in (job.script or {}).get("steps", []))


def _poison(job: Job, card: Card, events: EventBatch | None) -> None:
    """A job delivered more than CMS_JOB_MAX_DELIVERIES times without ever finishing (each copy crashes
    the agent, or the agent refuses it as a replay): it fails `poison` and the card is quarantined, so
    no new copy goes out until a person has looked (no endless loop). What it may have done is unknown:
    the card is probed once released."""
    job.move_to(JobState.FAILED)
    job.error = {"kind": POISON, "message": f"delivered {job.deliveries} times without a result "
                                            f"(CMS_JOB_MAX_DELIVERIES {settings.CMS_JOB_MAX_DELIVERIES})"}
    job.finished_at = timezone.now()
    job.save(update_fields=["state", "error", "finished_at", "deliveries", "updated_at"])
    card.state = CardState.QUARANTINED
    card.state_reason = f"poison job {job.id}: delivered {job.deliveries} times, never finished"[:200]
    card.probe_required = card.probe_required or _sent_key_changes(job)
    card.save(update_fields=["state", "state_reason", "probe_required", "updated_at"])
    _station_event("job.poisoned", job.station, job_id=str(job.id), card_uid=card.uid, result="failure",
                   details={"deliveries": job.deliveries}, events=events)
    _station_event("card.quarantined", job.station, job_id=str(job.id), card_uid=card.uid, result="failure",
                   details={"reason": card.state_reason, "kind": POISON}, events=events)


def _adopt_kdd(card: Card, kdd: str) -> None:
    """Check a known card's reported KDD against the stored one; store a first one when it is safe.

    A different KDD under the same UID is another chip (a swapped or cloned card): refused. A card
    registered before its KDD was read keeps diversifying from its UID once it holds a KDF3 key from
    it (adopting the KDD would change every key the CMS derives for it).
    """
    if not kdd or card.kdd == kdd:
        return
    if card.kdd:
        raise Refused("kdd_changed", f"the card reports KDD {kdd} but was registered with KDD {card.kdd}: "
                                     "another chip under the same UID; nothing sent")
    if not KeyVersion.objects.filter(slot__card=card, policy=KeyPolicy.DIVERSIFIED,
                                     master_version__master__method=DiversificationMethod.KDF3) \
            .exclude(state=VersionState.DESTROYED).exists():
        card.kdd = kdd
        card.save(update_fields=["kdd", "updated_at"])


@transaction.atomic
def _prepare_job(*, station: Station, uid: str, atr: str, chip_hint, presentation_key: str,
                 resumes: Job | None = None, kdd: str = "") -> tuple[Job | None, dict | None]:
    # Every event of the job (registration, key versions, unwrap, creation) is appended in one batch at
    # the end of this transaction: one chain-head lock instead of one per event.
    with EventBatch() as events:
        card = Card.objects.select_for_update().filter(uid=uid).first()
        if card is not None:
            if card.tenant_id != station.tenant_id:
                raise Refused("tenant", "the card belongs to another tenant than the station")
            card.tenant = station.tenant  # the same row, already read with the station
            if card.state in REFUSED_CARD_STATES:
                raise Refused("card_state", f"the card is {card.state}: a person must release it first")
            _adopt_kdd(card, kdd)
            _expire_stale_jobs(card, events)
            open_jobs = list(card.jobs.filter(state__in=OPEN_JOB_STATES)
                             .values_list("id", "presentation_key"))
            made = next((job_id for job_id, key in open_jobs if key == presentation_key), None)
            if made is not None:
                raise AlreadyMade(str(made))  # this report was delivered before (a redelivered task)
            if open_jobs:
                raise Refused("busy", "the card already has a job in progress")
        # The order is read here without a lock: it is locked (and its quantity checked again) only
        # just before the job row is inserted, after the Vault round trips (_claim_order), so stations
        # sharing one batch order do not queue behind each other's unwrap and signature.
        order = _match_order(station, uid, card)
        if order is not None:
            profile = order.profile
        elif card is not None and card.profile_id is not None:
            # No order, but a card we provisioned: it gets what its ledger still owes it (a probe, a
            # rotation's pending keys), or nothing.
            profile = card.profile
        else:
            raise Refused("no_order", "no open order for this card at this station")
        new_card = card is None
        if card is None:
            # Registered as it will be sent a job (provisioning, seen now at this station): no second
            # write of the row unless the plan turns out empty. Nobody sees it before the commit.
            card = Card(tenant=station.tenant, uid=uid, chip_type=_chip_type(chip_hint, None, order),
                        atr=atr[:66], profile=profile, kdd=kdd, state=CardState.PROVISIONING,
                        last_station=station, last_seen_at=timezone.now())
            # the tenant and profile rows are the station's and the order's (no lookups), and the UID's
            # uniqueness is the database's (an IntegrityError here is a concurrent presentation)
            card.full_clean(exclude=["tenant", "profile", "last_station"], validate_unique=False)
            card.save()
            _station_event("card.registered", station, card_uid=uid, events=events,
                           details={"chip_type": card.chip_type, "order": order.pk})
        if not profile.accepts_chip(card.chip_type):
            raise Refused("profile", f"profile {profile} is for {profile.chip_family} cards, "
                                     f"not {card.chip_type}")
        masters = _tenant_masters(card.tenant_id)
        created_slots = _ensure_layout(card, profile.spec, new_card=new_card, masters=masters)
        fresh: dict[str, bytearray] = {}  # random keys generated for this job, handed to the sealing
        try:
            return _plan_and_send(station=station, card=card, order=order, profile=profile, uid=uid, atr=atr,
                                  presentation_key=presentation_key, resumes=resumes, fresh=fresh,
                                  events=events, new_card=new_card, masters=masters,
                                  created_slots=created_slots)
        except DiversificationContextError as exc:
            # no guess, no padding: no job is made and the card row is not kept (atomic)
            raise Refused("diversification", str(exc)) from None
        finally:
            protocol.wipe_keys(fresh)


def _plan_and_send(*, station, card, order, profile, uid, atr, presentation_key, resumes,
                   fresh: dict[str, bytearray], events: EventBatch, new_card: bool = False,
                   masters: list[MasterKey] | None = None, created_slots: list[KeySlot] | None = None,
                   ) -> tuple[Job | None, dict | None]:
    """`new_card`: registered in this transaction, with every slot in `created_slots` (nothing of it
    is read back); `masters`: the tenant's `_tenant_masters`, read once for the layout and the ledger."""
    masters = _tenant_masters(card.tenant_id) if masters is None else masters
    created: list[KeyVersion] = []
    try:
        ledger = ledger_for(card, card.tenant_id, masters=masters, new_card=new_card)
        plan = compile_plan(card, profile, ledger)
        if plan.probe and plan.empty:
            # nothing known to be in flight: the probe has nothing to ask
            card.probe_required = ledger.probe_required = False
            plan = compile_plan(card, profile, ledger)
        if plan.needs_versions:
            if new_card:
                slots = {slot_label(s): s for s in created_slots or []}
            else:
                slots = {slot_label(s): s
                         for s in KeySlot.objects.filter(card=card).select_related("application")}
            created = sealing.key_versions_create_pending(
                slots=[slots[s.label] for s in plan.needs_versions], actor=None, keep=fresh, events=events,
                new_slots=new_card, master_versions=_active_versions(masters), pooled=True)
            for version in created:
                ledger.pending[slot_label(version.slot)] = Held(version.pk, version.number)
            plan = compile_plan(card, profile, ledger)
    except PlanError as exc:
        raise Refused("profile", str(exc)) from None
    if not plan.ready:
        raise Refused("profile", "the plan still names keys that have no version")
    if not new_card:  # a new card was registered with these already
        card.atr = atr[:66] or card.atr
        card.last_station, card.last_seen_at = station, timezone.now()
        card.profile = profile
    if plan.empty:
        if card.state != CardState.ACTIVE:
            card.state = CardState.ACTIVE
        card.save()
        return None, None
    if card.state == CardState.NEW:
        card.state = CardState.PROVISIONING
    if not new_card:
        card.save()
    if resumes is None and not new_card:
        resumes = (card.jobs.filter(state__in=[JobState.INTERRUPTED, JobState.FAILED])
                   .order_by("-created_at").first())
    # The row is inserted once, dispatched, after the keys are sealed and the envelope signed (its id
    # is made here); a failure before that rolls back everything this transaction wrote.
    job = Job(tenant_id=card.tenant_id, order=order, card=card, station=station, resumes=resumes,
              script=plan.script, script_digest=protocol.script_digest(plan.script),
              script_version=protocol.SCRIPT_VERSION, presentation_key=presentation_key)
    _station_event("job.created", station, job_id=str(job.id), card_uid=uid, events=events,
                   details={"order": order.pk if order else None, "profile": str(profile),
                            "probe": plan.probe,
                            "steps": len(plan.steps), "refs": plan.refs,
                            "resumes": str(resumes.id) if resumes else ""})
    envelope = _seal_and_sign(job, card, station, plan, fresh, events, loaded=created)
    if order is not None:
        _claim_order(order, card, new_card=new_card)
    job.move_to(JobState.DISPATCHED)
    job.dispatched_at = timezone.now()
    # a job resuming one that never finished is the same work delivered again: the count carries over
    job.deliveries = 1 + (resumes.deliveries if resumes is not None and resumes.state == JobState.FAILED
                          and (resumes.error or {}).get("kind") == NO_RESULT else 0)
    job.save(force_insert=True)
    transaction.on_commit(lambda: dispatch(station.queue, envelope))
    return job, envelope


def _envelope_card(card: Card) -> dict:
    """The card the job is for; a JCOP card's KDD lets the agent check INITIALIZE UPDATE's answer."""
    out = {"uid": card.uid, "chip_type": card.chip_type}
    if card.kdd:
        out["kdd"] = card.kdd
    return out


def _seal_and_sign(job: Job, card: Card, station: Station, plan: Plan, fresh: dict[str, bytearray],
                   events: EventBatch | None = None, loaded: list[KeyVersion] | None = None) -> dict:
    issued_at = int(time.time())
    expires_at = issued_at + job_ttl_seconds()
    with sealing.job_keys_unwrap(card=card, refs=plan.refs, job_id=str(job.id), known=fresh,
                                 events=events, loaded=loaded or ()) as keys:
        sealed = sealing.seal_for_station(keys, hpke_public_key_hex=station.hpke_public_key,
                                          job_id=str(job.id), station=station.code, expires_at=expires_at)
    envelope = {"v": protocol.PROTOCOL_VERSION, "job_id": str(job.id), "station": station.code,
                "tenant": card.tenant.slug, "issued_at": issued_at, "expires_at": expires_at,
                "card": _envelope_card(card), "script": plan.script,
                "script_digest": job.script_digest, "sealed_keys": sealed}
    # signed with the version the station pinned (enrolment or its last key roll, cards/services/keyroll.py)
    return signing.sign_document(envelope, version=station.cms_signing_key_version)


def _send(queue: str, envelope: dict) -> None:
    from cms.celery import app

    # a short label for the message headers and worker logs, not Celery's saferepr of the whole signed
    # envelope (script and sealed keys): CPU per dispatch, and the sealed blob stays out of every log line
    app.send_task("station.run_job", args=[envelope], queue=queue,
                  argsrepr=f"[job {envelope.get('job_id', '?')}]", kwargsrepr="{}")


# Replaceable by tests that play the station without a broker; production sends through Celery.
dispatch: Callable[[str, dict], None] = _send


# --- job results ---------------------------------------------------------------------------------------

def _sanitise_error(error) -> dict:
    if not isinstance(error, dict):
        return {}
    clean = {k: error.get(k) for k in ("step", "op", "apdu", "sw", "meaning", "kind", "message",
                                        "authentication", "reason") if error.get(k) is not None}
    for key in ("op", "apdu", "sw", "meaning", "kind", "message", "reason"):
        if key in clean:
            clean[key] = str(clean[key])[:500]
    sw = clean.get("sw")
    if isinstance(sw, str) and len(sw) == 4:
        try:
            clean.setdefault("meaning", describe(int(sw, 16)).meaning)
        except ValueError:
            pass
    return clean


def _sanitise_trace(trace, steps: list[dict]) -> list[dict]:
    """Keep the agent's redacted trace, and cut any unredacted command of a key-bearing step to its header."""
    out = []
    for entry in trace if isinstance(trace, list) else []:
        if not isinstance(entry, dict):
            continue
        step = entry.get("step")
        apdu = str(entry.get("apdu_hex", ""))[:1024]
        redacted = bool(entry.get("redacted"))
        op = steps[step]["op"] if isinstance(step, int) and 0 <= step < len(steps) else ""
        bearing = op in ("desfire.change_key", "gp.put_key", "desfire.authenticate", "gp.open_scp03",
                         "gp.open_scp02", "gp.store_data")
        if bearing and not redacted and entry.get("direction") == "TX" and len(apdu) > 10:
            apdu, redacted = apdu[:10], True
        out.append({"step": step, "direction": str(entry.get("direction", ""))[:2], "apdu_hex": apdu,
                    "redacted": redacted})
    return out[:2000]


_HEX_AID = re.compile(r"^(?:[0-9A-F]{2})+$")


def _plain_observation(observed: dict) -> dict:
    """What a card proved, as small scalars only (booleans, integers, short words, lists of integers)."""
    clean = {}
    for key, value in list(observed.items())[:16]:
        if isinstance(value, bool | int):
            clean[str(key)[:40]] = value
        elif isinstance(value, str) and len(value) <= 40:
            clean[str(key)[:40]] = value
        elif isinstance(value, list) and len(value) <= 32 and all(isinstance(v, int) for v in value):
            clean[str(key)[:40]] = value
        elif isinstance(value, list) and len(value) <= 64 and all(
                isinstance(v, str) and 10 <= len(v) <= 32 and _HEX_AID.match(v) for v in value):
            clean[str(key)[:40]] = value  # a registry probe's AIDs (5..16 bytes in hex)
    return clean


def _check_result_shape(result) -> None:
    if not isinstance(result, dict) or result.get("v") != protocol.PROTOCOL_VERSION:
        raise Refused("malformed", "a result is an object with v=1")
    if result.get("state") not in RESULT_STATES:
        raise Refused("malformed", f"unknown result state {result.get('state')!r}")
    if not isinstance(result.get("steps", []), list):
        raise Refused("malformed", "result.steps must be a list")


def job_result_handle(result: dict) -> dict:
    """Verify a job's signed result and move the job, card, order and key ledger by what the card proved."""
    job_id = result.get("job_id") if isinstance(result, dict) else None
    # The station refused a second copy of a job it had already received (a redelivery): that says nothing
    # of the job. Taken as the job's outcome it raced the first copy's result (two CMS worker processes)
    # and, first in, finished a job the card had run as "refused". It is counted in its own transaction.
    copy = isinstance(result, dict) and result.get("state") == JobState.REFUSED \
        and (result.get("error") or {}).get("reason") == "replay"
    job = station = None
    try:
        with transaction.atomic():
            # read once: a result's job locked here (the lock _apply_result works under, so no second read)
            job = _result_job(job_id, lock=not copy)
            station = job.station if job is not None else None
            if job is None:
                raise Refused("unknown_job", f"no job {str(job_id)[:40]!r}")
            if result.get("station") != station.code:
                raise Refused("station", "the result names another station than the job's")
            _verify_station_signature(result, station, "result")
            failpoints.hit("result.verified")
            _check_result_shape(result)
            if not copy:
                if station.status != StationStatus.APPROVED:
                    raise Refused("station", f"station {station.code} is {station.status}")
                with EventBatch() as events:
                    outcome = _apply_result(job, result, events)
                failpoints.hit("result.applied")
        if copy:
            poisoned = _count_redelivery(job.pk)
            if poisoned:
                return poisoned
            raise Refused("replay_copy", f"the station refused a copy of job {job.id} it had already "
                                         "received; the first copy's result (or the expiry) decides the job")
    except Refused as exc:
        return _refuse("job.result_refused", station, exc, job_id=str(job.id) if job else "",
                       card_uid=job.card.uid if job else "")
    _sync_campaigns(outcome.pop("activated", []))
    if outcome.pop("follow_up", None):
        try:
            outcome["next_job"] = job_follow_up(str(job.pk))
        except FOLLOW_UP_LATER as exc:
            # The probe's result is committed; the job after it needs Vault (key blobs unwrapped, the job
            # signed, its events chained). Raising here would have the result retried and refused as a
            # replay, and the follow-up lost until the card is presented again: its own task makes it
            # once Vault (or the database) is back, the card still in the reader (tests/faults/
            # test_vault_seal.py).
            log.warning("job.follow_up_deferred", job=str(job.id), error=type(exc).__name__)
            defer_follow_up(str(job.pk))
            outcome["next_job"] = "deferred"
    return outcome


FOLLOW_UP_LATER = (KeystoreUnavailable, AuditUnavailable, OperationalError)


def job_follow_up(job_id: str) -> str | None:
    """The job that follows a succeeded probe (the resume, with keys), made right after the probe's result
    or later by the `cms.job_follow_up` task. Idempotent: its presentation key is `after-<probe job>`; not
    made when the card has moved on since (a newer job, from a presentation). Returns the job's id, or
    None when there is nothing to do or it was refused (audited)."""
    job = Job.objects.select_related("station__tenant").get(pk=job_id)
    station, key = job.station, f"after-{job.pk}"
    existing = Job.objects.filter(presentation_key=key).first()
    if existing is not None:
        return str(existing.id)
    if Job.objects.filter(card_id=job.card_id, created_at__gt=job.created_at).exists():
        return None
    card = Card.objects.get(pk=job.card_id)
    try:
        follow, _ = _prepare_job(station=station, uid=card.uid, atr=card.atr, chip_hint=None,
                                 presentation_key=key, resumes=job)
    except Refused as exc:
        _refuse("card.presentation_refused", station, exc, card_uid=card.uid)
        return None
    except IntegrityError:  # a redelivered probe result or a concurrent task: it exists already
        existing = Job.objects.filter(presentation_key=key).first()
        return str(existing.id) if existing else None
    return str(follow.id) if follow else None


def _defer_follow_up(job_id: str) -> None:
    from cms.celery import app

    app.send_task("cms.job_follow_up", args=[job_id], queue="cms")


# Replaceable by tests that run without a broker, like `dispatch`.
defer_follow_up: Callable[[str], None] = _defer_follow_up


def _count_redelivery(job_pk) -> dict | None:
    """A copy the station refused as a replay is one more delivery of a job that has not finished."""
    with transaction.atomic(), EventBatch() as events:
        job = Job.objects.select_for_update(of=("self",)).select_related("station").get(pk=job_pk)
        if job.state not in OPEN_JOB_STATES:
            return None
        job.deliveries += 1
        if job.deliveries <= settings.CMS_JOB_MAX_DELIVERIES:
            job.save(update_fields=["deliveries", "updated_at"])
            return None
        card = Card.objects.select_for_update().get(pk=job.card_id)
        _poison(job, card, events)
    return {"status": "recorded", "job": str(job.id), "state": job.state, "quarantined": True,
            "error": job.error}


def _result_job(job_id, *, lock: bool) -> Job | None:
    """The job a result names, with its station, tenant and card (None: no such job); `lock`: the job's row
    and its card's locked, in this order, in one statement (what `_apply_result` moves)."""
    if not (isinstance(job_id, str) and len(job_id) == 36):
        return None
    jobs = Job.objects.select_related("station__tenant", "card")
    if lock:
        jobs = jobs.select_for_update(of=("self", "card"))
    try:
        return jobs.filter(pk=job_id).first()
    except ValidationError:
        return None


def _apply_result(job: Job, result: dict, events: EventBatch) -> dict:
    """Move the job, card, order and ledger by a verified result; `job` and `job.card` are locked by the
    caller (_result_job)."""
    late = job.state not in (JobState.DISPATCHED, JobState.RUNNING)
    takes_late = job.refused_unrun() or job.expired_no_result()
    if late and not (takes_late and result["state"] != JobState.REFUSED):
        raise Refused("replay", f"job {job.id} is already {job.state}")
    card = job.card
    if late and Job.objects.filter(card_id=card.pk, created_at__gt=job.created_at).exists():
        raise Refused("replay", f"job {job.id} is already {job.state} and the card has a newer job")
    if late and job.expired_no_result() and not _is_probe(job.script):
        # The expiry flagged the card because nothing said what this job did; its own result says it now.
        # A job that is not a probe was made with the flag down, and no job came after it: the flag was
        # the expiry's alone (the result's in-flight steps raise it again below).
        card.probe_required = False
    station = job.station
    if card.tenant_id == station.tenant_id:
        card.tenant = station.tenant  # the same row, already read with the job
    steps = (job.script or {}).get("steps", [])
    entries = []
    for entry in result.get("steps", []):
        index = entry.get("index") if isinstance(entry, dict) else None
        if not isinstance(index, int) or not 0 <= index < len(steps) or entry.get("op") != steps[index]["op"]:
            raise Refused("malformed", "a result step does not match the job's script")
        if entry.get("status") not in ("done", "failed", "in_flight"):
            raise Refused("malformed", f"result step {index} has status {entry.get('status')!r}")
        entries.append(entry)
    probe = _is_probe(job.script)
    common = {"job_id": str(job.id), "card_uid": card.uid}
    grace = settings.KEY_GRACE_PERIOD_DAYS
    # every version of the card, locked (after the card, as versions_activate would): what the result
    # activates and what that retires are among them, so neither is read again; each says whether a
    # rotation campaign follows it (most do not, and then _sync_campaigns reads nothing)
    in_campaign = CampaignItem.objects.filter(Q(new_version=OuterRef("pk"))
                                              | Q(restore_version=OuterRef("pk")))
    versions_by_id = {v.pk: v for v in KeyVersion.objects.select_for_update(of=("self",)).select_related(
        "slot__application").annotate(in_campaign=Exists(in_campaign)).filter(slot__card=card)}
    for version in versions_by_id.values():
        version.slot.card, version.slot.tenant = card, card.tenant
    probe_answers = 0
    activated: list[int] = []  # KeyVersion ids this result made active (campaigns follow them)
    proven: list[tuple[dict, list[KeyVersion]]] = []  # (a step's event details, the versions it proved)
    seen: dict[int, dict] = {}  # index -> the observation as stored (scalars only)
    for entry in entries:
        step = steps[entry["index"]]
        op, status = step["op"], entry["status"]
        raw = entry.get("observed")
        observed = seen[entry["index"]] = _plain_observation(raw if isinstance(raw, dict) else {})
        # The ledger moves by OUR script's confirms, never by what the result claims to confirm.
        confirmed = [versions_by_id[i] for i in _confirmed_ids(step.get("confirms")) if i in versions_by_id]
        action = STEP_ACTIONS.get(op)
        if action is None and status == "done":
            continue  # a select or a commit that went through changes no security state
        action = action or "card.step_failed"
        details = {"op": op, "step": entry["index"], "status": status, "label": step.get("label", "")}
        if op in ("desfire.authenticate", "desfire.change_key", "desfire.get_key_version"):
            details["key_no"] = step.get("key_no")
        if op in ("desfire.write_data", "desfire.write_record", "desfire.credit", "desfire.create_file"):
            details["file_no"] = step.get("file_no")
        if "aid" in step:
            details["aid"] = step["aid"]
        if observed:
            details["observed"] = observed
        if status == "done" and confirmed:
            # the card proved the key: active now (all of the result's at once, after this loop),
            # recorded in this step's own event, which is appended with the others at the end
            proven.append((details, confirmed))
        elif status == "in_flight" and confirmed:
            card.probe_required = True
            details["in_flight"] = [v.number for v in confirmed]
        events.add(action=action, actor_type="station", actor_name=station.code, tenant=card.tenant,
                   result={"done": "success", "failed": "failure", "in_flight": "unknown"}[status],
                   key_version=confirmed[0].number if len(confirmed) == 1 else None,
                   details=details, **common)
        if probe and status == "done" and op in LISTING_OPS:
            probe_answers += 1  # ledger_for reads the listing from the stored observation
        elif probe and status == "done" and str(step.get("label", "")).startswith("probe."):
            probe_answers += _resolve_probe(card, step, observed, grace, str(job.id), events, activated)
    if proven:
        changes = iter(sealing.versions_activate([v for _, versions in proven for v in versions],
                                                 grace_days=grace, job_id=str(job.id), audit=False,
                                                 # a probe may have moved some already (re-read)
                                                 card_versions=None if probe else versions_by_id))
        for details, versions in proven:
            moved = [(version, next(changes)) for version in versions]
            details["activated"] = [change for _, change in moved if change]
            activated.extend(version.pk for version, change in moved if change)
    state = result["state"]
    error = _sanitise_error(result.get("error"))
    failed_op = steps[error["step"]]["op"] if isinstance(error.get("step"), int) \
        and 0 <= error["step"] < len(steps) else ""
    auth_failure = state == JobState.FAILED and error.get("kind") not in NOT_A_CARD_ANSWER and (
        error.get("authentication") is True or error.get("kind") in AUTH_FAILURE_KINDS
        or failed_op in AUTH_OPS)
    if failed_op in CREATE_OPS and error.get("kind") in NOT_A_CARD_ANSWER:
        card.probe_required = True  # a create went out and no answer came: list before creating again
    if late:
        # A copy refused as expired ended the job first, but an earlier copy ran on the card: its result
        # is what the card did (the ledger must move by it, or the next job authenticates with old keys).
        events.add(action="job.late_result", actor_type="station", actor_name=station.code,
                   tenant=card.tenant, result="success",
                   details={"previous_state": job.state, "previous_error": job.error, "state": state},
                   **common)
        if job.refused_unrun():
            _restore_claim(job)
        job.take_late_result(state)
    else:
        job.move_to(state)
        if state == JobState.REFUSED:
            _release_claim(job)
    job.stage_reached = str(result.get("stage", ""))[:64]
    job.steps_done = sum(1 for e in entries if e["status"] == "done")
    job.result = {"state": state, "steps": [{"index": e["index"], "op": e["op"], "status": e["status"],
                                             "observed": seen.get(e["index"], {})} for e in entries],
                  "started_at": result.get("started_at"), "finished_at": result.get("finished_at")}
    job.error = error
    job.trace = _sanitise_trace(result.get("trace"), steps)
    job.finished_at = timezone.now()
    # not the script (the largest field, unchanged since the job was made): it is not written again
    job.save(update_fields=["state", "stage_reached", "steps_done", "result", "error", "trace", "finished_at",
                            "updated_at"])
    follow_up = False
    if auth_failure:
        card.state = CardState.QUARANTINED
        card.state_reason = (f"authentication failed at step {error.get('step')} "
                             f"({failed_op or error.get('op')}): SW {error.get('sw', '?')} "
                             f"{error.get('meaning', '')}")[:200]
        events.add(action="card.quarantined", actor_type="station", actor_name=station.code,
                   tenant=card.tenant, result="failure",
                   details={"reason": card.state_reason, "kind": error.get("kind", "")}, **common)
    elif probe and state == JobState.SUCCEEDED and (refused := _life_cycle_refused(steps, entries, seen)):
        # the card would not tell its life cycle: nothing is assumed, a person looks at the card (released,
        # the next presentation reads the life cycle again)
        card.state = CardState.QUARANTINED
        card.state_reason = (f"{LIFE_CYCLE_UNKNOWN}: GET STATUS of the ISD in an authenticated channel "
                             f"answered SW {refused}, not a life cycle; check the card (GP SET STATUS / "
                             "GET STATUS with its active keys) before releasing it")[:200]
        events.add(action="card.quarantined", actor_type="station", actor_name=station.code,
                   tenant=card.tenant, result="failure",
                   details={"reason": card.state_reason, "kind": LIFE_CYCLE_UNKNOWN, "sw": refused}, **common)
    elif probe and state == JobState.SUCCEEDED:
        still = card.probe_required and probe_answers == 0
        card.probe_required = False if not still else card.probe_required
        follow_up = not card.probe_required
    elif state == JobState.SUCCEEDED and not card.probe_required:
        card.state, card.state_reason = CardState.ACTIVE, ""
        if job.order_id:
            # one UPDATE (the row lock included): the right-hand side sees the row as it was, so the
            # order completes when the card before this one was its last but one
            Order.objects.filter(pk=job.order_id).update(
                cards_done=F("cards_done") + 1, updated_at=timezone.now(),
                state=Case(When(quantity__isnull=False, cards_done__gte=F("quantity") - 1,
                                then=Value(OrderState.COMPLETED)), default=F("state")))
    elif state == JobState.FAILED and job.order_id:
        Order.objects.filter(pk=job.order_id).update(cards_failed=F("cards_failed") + 1)
    card.save(update_fields=["state", "state_reason", "probe_required", "updated_at"])
    events.add(action="job.finished", actor_type="station", actor_name=station.code, tenant=card.tenant,
               result="success" if state == JobState.SUCCEEDED else "failure",
               details={"state": state, "steps_done": job.steps_done, "stage": job.stage_reached,
                        "probe": probe, "error": error, "quarantined": auth_failure,
                        "probe_required": card.probe_required}, **common)
    return {"status": "recorded", "job": str(job.id), "state": state, "quarantined": auth_failure,
            "probe_required": card.probe_required, "follow_up": follow_up,
            "activated": [pk for pk in activated if getattr(versions_by_id.get(pk), "in_campaign", True)]}


def _sync_campaigns(version_ids: list[int]) -> None:
    """Rotation campaigns whose versions this result activated move on now (progress is live), after
    the result's own transaction: a campaign's bookkeeping never holds up or undoes the card's."""
    if not version_ids:
        return
    # the items first (one table): most activations belong to no campaign, and then nothing else is read
    campaign_ids = set(CampaignItem.objects.filter(
        Q(new_version_id__in=version_ids) | Q(restore_version_id__in=version_ids)
    ).values_list("campaign_id", flat=True))
    if not campaign_ids:
        return
    for campaign in RotationCampaign.objects.filter(pk__in=campaign_ids):
        try:
            campaigns.campaign_sync(campaign)
        except Exception as exc:  # noqa: BLE001 - the result is recorded; a retry would only be refused
            # as a replay. The campaign catches up at its next sync (batch task, page, next result).
            log.warning("campaign.sync_failed", campaign=campaign.pk, error=type(exc).__name__)


def _resolve_probe(card: Card, step: dict, observed: dict, grace: int, job_id: str,
                   events: EventBatch | None = None, activated: list[int] | None = None) -> int:
    """Settle one in-flight slot (or the ISD key set) from a probe answer; 1 if it was answered."""
    label = step["label"][len("probe."):]
    slots = {slot_label(s): s for s in KeySlot.objects.filter(card=card).select_related("application")}
    if label == "isd":
        kvns = observed.get("kvns")
        if not isinstance(kvns, list):
            kvn = observed.get("key_version")
            kvns = [kvn] if isinstance(kvn, int) else None
        if kvns is None:
            return 0
        expected = step.get("expect_kvn")
        targets = [slots[label] for label, *_ in ISD_SLOTS if label in slots]
        holds_new = expected in kvns
    else:
        version_no = observed.get("key_version")
        if not isinstance(version_no, int) or label not in slots:
            return 0
        targets = [slots[label]]
        pending = (KeyVersion.objects.filter(slot=slots[label], state=VersionState.PENDING)
                   .order_by("-number").first())
        holds_new = pending is not None and (pending.number & 0xFF) == version_no
    for slot in targets:
        pending = KeyVersion.objects.filter(slot=slot, state=VersionState.PENDING).order_by("-number").first()
        if pending is not None and holds_new:
            if activated is not None:
                activated.append(pending.pk)
            sealing.version_activate(pending, grace_days=grace, job_id=job_id, events=events,
                                     evidence={"probe": step["op"], **{k: v for k, v in observed.items()
                                                                        if isinstance(v, int | list)}})
    return 1


# --- dry run and people ------------------------------------------------------------------------------

def plan_preview(*, actor, profile, card: Card | None = None, uid: str = "", chip_type: str = "") -> Plan:
    """The plan a card would get from `profile` now: steps with key refs, never keys; nothing is written.

    For an existing card (by id, or a registered UID the caller may see) its ledger is used;
    otherwise the card is taken as new (factory or transport keys).
    """
    from cms.scoping import ensure_allowed, restrict

    ensure_allowed(profile, actor, "view")
    if card is None and uid:
        card = restrict(Card.objects.filter(uid=normalise_hex(uid)), actor, "view").first()
    if card is not None:
        if card.tenant_id != profile.tenant_id:
            raise ValidationError({"card": ["belongs to another tenant than the profile"]})
        ledger = ledger_for(card, card.tenant_id)
    else:
        card = Card(tenant_id=profile.tenant_id, uid=normalise_hex(uid), chip_type=chip_type)
        ledger = ledger_for(None, profile.tenant_id)
    if not profile.accepts_chip(card.chip_type):
        raise ValidationError({"chip_type": [f"the profile is for {profile.chip_family} cards, "
                                             f"not {card.chip_type}"]})
    try:
        return compile_plan(card, profile, ledger)
    except PlanError as exc:
        raise ValidationError({"profile": [str(exc)]}) from None


@transaction.atomic
def card_release(*, actor, card: Card, reason: str = "") -> Card:
    """A person decided a quarantined card may be worked on again (nothing retries on its own)."""
    from cms.scoping import ensure_allowed

    ensure_allowed(card, actor, "manage")
    card = Card.objects.select_for_update().get(pk=card.pk)
    if card.state != CardState.QUARANTINED:
        raise ValidationError({"state": [f"the card is {card.state}; only a quarantined card is released"]})
    previous_reason = card.state_reason
    # Back to provisioning: the next presentation compiles from the ledger (an empty plan makes it active).
    card.state = CardState.PROVISIONING
    card.state_reason = ""
    card.save(update_fields=["state", "state_reason", "updated_at"])
    record_event(action="card.released", actor=actor, tenant=card.tenant, card_uid=card.uid,
                 details={"reason": reason, "quarantine_reason": previous_reason, "state": card.state})
    return card
