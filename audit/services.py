"""Writing audit events: `record_event` appends one event to the chain inside the caller's transaction."""
from __future__ import annotations

import structlog
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from audit.chain import event_hash, fields_of
from audit.chainkey import chain_key
from audit.details import sanitize_details
from audit.errors import AuditError
from audit.models import GENESIS_HASH, ActorType, AuditEvent, ChainHead


def _actor_fields(actor, actor_type: str | None, actor_name: str | None) -> tuple[str, str, str]:
    """(type, id, name) copied as text so the event outlives the actor."""
    if actor is None:
        kind, ident, name = ActorType.SYSTEM, "", "system"
    elif not getattr(actor, "is_authenticated", True):
        kind, ident, name = ActorType.ANONYMOUS, "", "anonymous"
    else:
        from cms.models import ServiceAccount  # cms is the project core, not a CMS app

        if isinstance(actor, ServiceAccount):
            kind, name = ActorType.SERVICE, actor.username
        elif hasattr(actor, "get_username"):
            kind, name = ActorType.USER, actor.get_username()
        else:
            kind, name = type(actor).__name__.lower(), str(actor)
        ident = "" if getattr(actor, "pk", None) is None else str(actor.pk)
    return str(actor_type or kind), ident, (actor_name if actor_name is not None else name)


def _bound(name: str) -> str:
    return str(structlog.contextvars.get_contextvars().get(name, "") or "")


def _lock_head() -> ChainHead:
    """Take the chain head: the UPDATE comes first so concurrent appends queue here."""
    if not ChainHead.objects.filter(pk=ChainHead.HEAD_ID).update(sequence=F("sequence") + 1):
        # No head yet (fresh or flushed database): start it from the last event, if any.
        last = AuditEvent.objects.order_by("-sequence").only("sequence", "hash").first()
        ChainHead.objects.bulk_create(
            [ChainHead(pk=ChainHead.HEAD_ID, sequence=last.sequence if last else 0,
                       hash=last.hash if last else GENESIS_HASH)],
            ignore_conflicts=True)
        if not ChainHead.objects.filter(pk=ChainHead.HEAD_ID).update(sequence=F("sequence") + 1):
            raise AuditError("audit chain head could not be created")
    return ChainHead.objects.get(pk=ChainHead.HEAD_ID)


@transaction.atomic
def record_event(*, action: str, actor=None, actor_type: str | None = None, actor_name: str | None = None,
                 tenant=None, result: str = "success", request_id: str = "", job_id: str = "",
                 card_uid: str = "", aid: str = "", key_no: int | None = None,
                 key_version: int | None = None, details: dict | None = None) -> AuditEvent:
    """Append one event. Raises (and so aborts the caller's transaction) if it cannot be written.

    `tenant` is any object with `.pk` and `.slug` (or None); `actor` a Django user, a
    ServiceAccount, None (the system), or anything else with `actor_type`/`actor_name` given.
    `request_id` and `job_id` default to the ones bound in structlog's contextvars.
    """
    if not action or len(action) > 64:
        raise AuditError("action must be 1 to 64 characters")
    kind, ident, name = _actor_fields(actor, actor_type, actor_name)
    clean_details = sanitize_details(details)
    # Read the key before taking the head lock: a Vault outage then fails without holding it.
    key = chain_key()
    head = _lock_head()
    event = AuditEvent(
        sequence=head.sequence,
        created_at=timezone.now(),
        actor_type=kind, actor_id=ident, actor_name=name[:150],
        request_id=(request_id or _bound("request_id"))[:64],
        job_id=str(job_id or _bound("job_id"))[:64],
        tenant_id=getattr(tenant, "pk", None) if tenant is not None else None,
        tenant_slug=getattr(tenant, "slug", "") if tenant is not None else "",
        action=action, result=result,
        card_uid=(card_uid or "").upper(), aid=(aid or "").upper(),
        key_no=key_no, key_version=key_version,
        details=clean_details,
        prev_hash=head.hash,
    )
    event.hash = event_hash(key, fields_of(event))
    event.save(force_insert=True)
    ChainHead.objects.filter(pk=ChainHead.HEAD_ID).update(hash=event.hash)
    return event
