"""What the job modules share: open job states, error kinds, `Refused`, the job TTL, station audit events."""
from __future__ import annotations

from django.conf import settings

from audit.services import EventBatch, record_event
from cards.models import Station
from cards.models.orders import JobState

OPEN_JOB_STATES = (JobState.CREATED, JobState.DISPATCHED, JobState.RUNNING)
NOT_A_CARD_ANSWER = frozenset({"CardRemovedError", "TransportError"})
NO_RESULT = "NoResult"  # error kind of a job that expired without a result
POISON = "poison"  # error kind of a job delivered more than CMS_JOB_MAX_DELIVERIES times, never finished


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
