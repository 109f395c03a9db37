"""Reading audit events, always through cms.scoping (action "view_audit")."""
from __future__ import annotations

from datetime import datetime

from django.db.models import QuerySet

from audit.models import AuditEvent
from cms.scoping import restrict

_EXACT_FILTERS = ("action", "result", "job_id", "request_id", "tenant_slug", "actor_type", "actor_name")


def audit_event_list(*, actor, filters: dict | None = None) -> QuerySet[AuditEvent]:
    """Events the actor may audit, newest first. Events without a tenant: superusers only.

    `filters` may hold the exact-match fields above, `card_uid` and `aid` (hex, any case),
    `since` and `until` (datetimes: since <= created_at < until).
    """
    queryset = restrict(AuditEvent.objects.all(), actor, "view_audit")
    filters = {name: value for name, value in (filters or {}).items() if value not in (None, "")}
    for name in _EXACT_FILTERS:
        if name in filters:
            queryset = queryset.filter(**{name: filters[name]})
    for name in ("card_uid", "aid"):
        if name in filters:
            queryset = queryset.filter(**{name: str(filters[name]).upper()})
    since: datetime | None = filters.get("since")
    until: datetime | None = filters.get("until")
    if since is not None:
        queryset = queryset.filter(created_at__gte=since)
    if until is not None:
        queryset = queryset.filter(created_at__lt=until)
    return queryset.order_by("-sequence")
