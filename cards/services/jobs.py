"""Provisioning jobs: a signed station report becomes a sealed, signed job; the result moves the ledger.

Two entry points, called by the thin Celery tasks in cards/tasks.py (queue "cms"):

- `station_report_handle(report)`: heartbeat / card_presented / card_removed from a station agent.
- `job_result_handle(result)`: the agent's signed result of one job.

Anything that does not verify (unknown or unapproved station, bad signature, stale report, result
of another station, unknown or finished job) is refused with an audit event and changes nothing.
Keys: unwrapped from Vault in ONE batch per job (keys.sealing), sealed to the station with HPKE,
wiped on the way out; the job itself is signed by Vault Transit (keys.signing).

This module keeps the entry points and the building of a job; the rest is split by sub-domain:
jobs_common.py (job states, error kinds, `Refused`, station events), claims.py (which order a card
falls under, its claimed cards), ledger.py (the key-version ledger as the compiler sees it),
results.py (applying a verified result) and expiry.py (expiry sweep, redeliveries, poison).
`dispatch` and `defer_follow_up` stay here, called through this module: tests replace them.
"""
from __future__ import annotations

import hashlib
import ipaddress
import time
from collections.abc import Callable

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from django.core.exceptions import ValidationError
from django.db import IntegrityError, OperationalError, transaction
from django.utils import timezone

from audit.errors import AuditUnavailable
from audit.services import EventBatch, record_event
from cards.compiler import Held, Plan, PlanError, compile_plan, slot_specs
from cards.models import Application, Card, CardFile, Job, Order, Station
from cards.models.cards import AppKind, CardState, ChipType
from cards.models.orders import JobState
from cards.models.stations import StationStatus
from cards.services.claims import _claim_order, _match_order
from cards.services.expiry import _count_redelivery, _expire_stale_jobs
from cards.services.expiry import jobs_expire_sweep as jobs_expire_sweep  # re-exported
from cards.services.jobs_common import NO_RESULT, OPEN_JOB_STATES, Refused, _station_event, job_ttl_seconds
from cards.services.ledger import _active_versions, _is_probe, _tenant_masters, ledger_for, slot_label
from cards.services.ledger import plan_for as plan_for  # re-exported
from cards.services.results import _apply_result, _check_result_shape, _result_job, _sync_campaigns
from cards.validators import normalise_hex, validate_uid
from cms import failpoints
from cms.errors import KeystoreUnavailable
from keys import sealing, signing
from keys.models import DiversificationMethod, KeyPolicy, KeySlot, KeyVersion, MasterKey, VersionState
from keys.services import DiversificationContextError
from readeragent import protocol

log = structlog.get_logger(__name__)

REPORT_TYPES = ("card_presented", "card_removed", "heartbeat")
REPORT_MAX_SKEW_SECONDS = 300
STATION_SEEN_RESOLUTION = 1.0  # seconds: a station's last_seen_at is written at most once a second
REFUSED_CARD_STATES = (CardState.QUARANTINED, CardState.REVOKED, CardState.SUSPENDED)


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
