"""Rotating the CMS job-signing key without re-enrolling stations (protocol: readeragent/keyroll.py).

`signing_key_rotate` makes a new version in Vault Transit and sends every approved station a key-roll
message signed with the version that station already pinned. The station pins the new version and
answers (signed with its own key); `key_roll_result_handle` then moves the station's
`cms_signing_key_version`, which is the version its jobs are signed with from then on. So no station
is ever sent a job signed with a key it does not yet trust, and a station that is offline during the
rotation simply keeps its old version until its answer arrives (`key_rolls_send` sends again).
`key_rolls_send(retire_below=N)` tells stations that already use version N that older ones are retired.

Only approved stations get rolls: a revoked, pending or merely enrolled station gets nothing (an
enrolled station approved later is sent one by `key_rolls_send`). Every rotation, roll, answer and
refused answer is audited; no key material is involved (public keys only).
"""
from __future__ import annotations

import time
from collections.abc import Callable

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone

from audit.services import record_event
from cards.models import Station, StationKeyRoll
from cards.models.stations import KeyRollState, StationStatus
from keys import signing
from readeragent import keyroll, protocol

log = structlog.get_logger(__name__)


class RollAnswerRefused(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def ensure_key_admin(actor) -> None:
    """The job-signing key is one for the whole CMS: only a superuser (or the shell, actor None)."""
    if actor is not None and not getattr(actor, "is_superuser", False):
        raise PermissionDenied("only a superuser may rotate or roll the CMS job-signing key")


def _send(queue: str, document: dict) -> None:
    from cms.celery import app

    app.send_task(keyroll.KEY_ROLL, args=[document], queue=queue)


# Replaceable by tests that play the station without a broker; production sends through Celery.
dispatch: Callable[[str, dict], None] = _send


def signing_key_rotate(*, actor=None, reason: str = "") -> dict:
    """New Transit version, audited, then a roll to every approved station. Returns a summary."""
    ensure_key_admin(actor)
    before, after = signing.rotate_signing_key()
    with transaction.atomic():
        # Stations whose pinned version was never recorded got their jobs signed with the latest version
        # so far, and ran them: they trust `before`.
        filled = Station.objects.filter(cms_signing_key_version__isnull=True) \
            .exclude(status__in=[StationStatus.REVOKED, StationStatus.PENDING]).exclude(sign_public_key="") \
            .update(cms_signing_key_version=before)
        record_event(action="keys.job_signing_key_rotated", actor=actor,
                     **({} if actor is not None else {"actor_type": "system", "actor_name": "manage.py"}),
                     details={"key": signing.signing_key_name(), "previous_version": before,
                              "new_version": after, "stations_version_recorded": filled,
                              "reason": reason[:200]})
    rolls = key_rolls_send(actor=actor, version=after)
    return {"previous_version": before, "new_version": after, **rolls}


def key_rolls_send(*, actor=None, version: int | None = None, retire_below: int | None = None,
                   stations: list[str] | None = None) -> dict:
    """Send `version` (default: the latest) to every approved station that does not use it yet; with
    `retire_below`, also tell those that already use it to forget older versions. Returns
    {"sent": [codes], "up_to_date": [codes], "unknown": [codes whose pinned version is not recorded]}."""
    ensure_key_admin(actor)
    latest = int(signing.ensure_signing_key()["latest_version"])
    version = latest if version is None else version
    new_public, _ = signing.public_key(version)
    if retire_below is not None and not 1 <= retire_below <= version:
        raise ValueError(f"retire_below must be between 1 and {version}")
    out: dict[str, list[str]] = {"sent": [], "up_to_date": [], "unknown": []}
    queryset = Station.objects.filter(status=StationStatus.APPROVED).select_related("tenant")
    if stations:
        queryset = queryset.filter(code__in=stations)
    with transaction.atomic():
        for station in queryset.select_for_update(of=("self",)).order_by("code"):
            pinned = station.cms_signing_key_version
            if pinned is None:
                out["unknown"].append(station.code)
                continue
            # retiring is only told to a station whose jobs are already signed with `version`: one whose
            # answer to the roll got lost must keep the version the CMS still signs its jobs with
            retire = retire_below if pinned == version else None
            if pinned >= version and retire is None:
                out["up_to_date"].append(station.code)
                continue
            roll = StationKeyRoll.objects.create(station=station, signed_with=pinned, new_version=version,
                                                 retire_below=retire, created_by=_name(actor))
            document = {"v": protocol.PROTOCOL_VERSION, "type": "key_roll", "roll_id": str(roll.id),
                        "station": station.code, "issued_at": int(time.time()), "new_version": version,
                        "new_public_key": new_public.hex()}
            if retire is not None:
                document["retire_below"] = retire
            signed = signing.sign_document(document, version=pinned)
            record_event(action="station.key_roll_sent", actor=actor, tenant=station.tenant,
                         **({} if actor is not None else {"actor_type": "system", "actor_name": "manage.py"}),
                         details={"station": station.code, "roll_id": str(roll.id), "signed_with": pinned,
                                  "new_version": version, "retire_below": retire})
            queue = station.queue
            transaction.on_commit(lambda q=queue, d=signed: _dispatch_logged(q, d))
            out["sent"].append(station.code)
    return out


def _dispatch_logged(queue: str, document: dict) -> None:
    """After commit: a broker that does not take the roll leaves it SENT; `key_rolls_send` sends again."""
    try:
        dispatch(queue, document)
    except Exception as exc:  # noqa: BLE001 - the roll is recorded; resending is the remedy
        log.warning("station.key_roll_not_sent", queue=queue, roll_id=document.get("roll_id"),
                    error=type(exc).__name__)


def _name(actor) -> str:
    from cms.scoping import actor_name

    return "manage.py" if actor is None else actor_name(actor)[:150]


def _refuse(station: Station | None, code: str, exc: RollAnswerRefused, roll_id) -> dict:
    with transaction.atomic():
        record_event(action="station.key_roll_answer_refused", actor_type="station", actor_name=code[:150],
                     tenant=station.tenant if station else None, result="failure",
                     details={"station": code[:50], "roll_id": str(roll_id)[:64], "reason": exc.reason,
                              "message": str(exc)[:300]})
    return {"status": "refused", "reason": exc.reason}


def key_roll_result_handle(answer) -> dict:
    """A station's signed answer to a key roll: verify it, then move the station's signing version (pinned)
    or record the station's refusal. A forged, unknown, replayed or malformed answer changes nothing."""
    code = answer.get("station") if isinstance(answer, dict) else None
    code = code if isinstance(code, str) else ""
    roll_id = answer.get("roll_id") if isinstance(answer, dict) else None
    station = Station.objects.select_related("tenant").filter(code=code).first() if code else None
    try:
        if not isinstance(answer, dict) or answer.get("v") != protocol.PROTOCOL_VERSION \
                or answer.get("type") != "key_roll_result" \
                or answer.get("state") not in ("pinned", "refused"):
            raise RollAnswerRefused("malformed", "a key roll answer is an object with v=1, type "
                                                 "key_roll_result and state pinned or refused")
        if station is None:
            raise RollAnswerRefused("station", f"no station {code[:50]!r}")
        if station.status != StationStatus.APPROVED:
            raise RollAnswerRefused("station", f"station {station.code} is {station.status}, not approved")
        try:
            protocol.verify_signature(answer, Ed25519PublicKey.from_public_bytes(
                bytes.fromhex(station.sign_public_key)), "key roll answer")
        except protocol.ProtocolError as exc:
            raise RollAnswerRefused("signature", str(exc)) from None
    except RollAnswerRefused as exc:
        return _refuse(station, code, exc, roll_id)
    with transaction.atomic():
        try:
            roll = StationKeyRoll.objects.select_for_update().filter(
                pk=roll_id if isinstance(roll_id, str) and len(roll_id) == 36 else None,
                station=station).first()
            if roll is None:
                raise RollAnswerRefused("unknown", f"no key roll {str(roll_id)[:64]!r} for this station")
            if roll.state != KeyRollState.SENT:
                raise RollAnswerRefused("replay", f"key roll {roll.id} was already answered ({roll.state})")
            if answer.get("new_version") != roll.new_version:
                raise RollAnswerRefused("malformed", "the answer names another version than the roll")
            pinned = answer.get("pinned_versions")
            if answer["state"] == "pinned" and not (isinstance(pinned, list) and roll.new_version in pinned):
                raise RollAnswerRefused("malformed", "a pinned answer must list the new version as pinned")
        except RollAnswerRefused as exc:
            transaction.set_rollback(True)
            refused = exc
        else:
            refused = None
            roll.answered_at = timezone.now()
            details = {"station": station.code, "roll_id": str(roll.id), "new_version": roll.new_version,
                       "pinned_versions": [v for v in pinned if isinstance(v, int)][:32]
                       if isinstance(pinned, list) else []}
            if answer["state"] == "pinned":
                roll.state = KeyRollState.PINNED
                station = Station.objects.select_for_update().get(pk=station.pk)
                station.cms_signing_key_version = max(station.cms_signing_key_version or 0, roll.new_version)
                station.save(update_fields=["cms_signing_key_version"])
                record_event(action="station.signing_key_pinned", actor_type="station",
                             actor_name=station.code, tenant=station.tenant,
                             details={**details, "retire_below": roll.retire_below,
                                      "jobs_signed_with": station.cms_signing_key_version})
            else:
                roll.state = KeyRollState.REFUSED
                roll.reason = f"{str(answer.get('reason'))[:20]}: {str(answer.get('message'))[:270]}"
                record_event(action="station.key_roll_refused", actor_type="station", actor_name=station.code,
                             tenant=station.tenant, result="failure",
                             details={**details, "reason": str(answer.get("reason"))[:20],
                                      "message": str(answer.get("message"))[:300]})
            roll.save(update_fields=["state", "reason", "answered_at"])
    if refused is not None:
        return _refuse(station, code, refused, roll_id)
    return {"status": roll.state, "station": station.code, "version": station.cms_signing_key_version}
