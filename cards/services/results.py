"""Applying a verified job result: the job, card, order and key ledger move by what the card proved."""
from __future__ import annotations

import re

import structlog
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db.models import Case, Exists, F, OuterRef, Q, Value, When
from django.utils import timezone

from audit.services import EventBatch
from cardproto.sw import describe
from cards.compiler import AUTH_OPS, CREATE_OPS, ISD_SLOTS
from cards.models import Card, Job, Order
from cards.models.cards import CardState
from cards.models.orders import JobState, OrderState
from cards.services.claims import _recount_claim
from cards.services.jobs_common import NOT_A_CARD_ANSWER, Refused
from cards.services.ledger import _confirmed_ids, _is_probe, slot_label
from keys import campaigns, sealing
from keys.models import KeySlot, KeyVersion, VersionState
from keys.models_campaigns import CampaignItem, RotationCampaign
from readeragent import protocol

log = structlog.get_logger(__name__)

RESULT_STATES = (JobState.SUCCEEDED, JobState.FAILED, JobState.INTERRUPTED, JobState.REFUSED)
# The agent's error kinds (exception class names) that mean the card refused our key or cryptogram.
# A PUT KEY whose key check values differ leaves keys on the card that nobody knows: a person looks.
AUTH_FAILURE_KINDS = frozenset({"AuthenticationError", "AuthenticationRejectedError", "CryptogramError",
                                "CryptogramMismatchError", "KcvMismatchError"})
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
LIFE_CYCLE_UNKNOWN = "life_cycle_unknown"


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
            _recount_claim(job, +1)
        job.take_late_result(state)
    else:
        job.move_to(state)
        if state == JobState.REFUSED:
            _recount_claim(job, -1)
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


def _life_cycle_refused(steps: list, entries: list, seen: dict[int, dict]) -> str | None:
    """The SW with which the card refused a life cycle probe of this result (None: none refused)."""
    for entry in entries:
        if entry["status"] == "done" and steps[entry["index"]].get("label") == "probe.life_cycle":
            refused = seen.get(entry["index"], {}).get("refused_sw")
            if refused:
                return str(refused)[:4]
    return None
