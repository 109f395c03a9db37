"""The dashboard: cards per state, provisioning rate, stations online, key versions per slot role."""
from __future__ import annotations

from datetime import timedelta

from django.db.models import Count, Min, Q
from django.db.models.functions import TruncDate
from django.shortcuts import render
from django.utils import timezone

from cards.models.cards import CardState
from cards.models.orders import JobState
from cards.selectors import card_list, job_list, station_list
from cms.web.access import current, page
from cms.web.views.alerts import open_alert_count
from keys.models import VersionState
from keys.selectors import key_version_list

RATE_DAYS = 14


def _bars(rows: list[dict], key: str = "n") -> list[dict]:
    top = max((r[key] for r in rows), default=0) or 1
    return [{**r, "pct": round(100 * r[key] / top)} for r in rows]


@page("view")
def dashboard(request):
    tenant, _ = current(request)
    cards = card_list(actor=request.user).filter(tenant=tenant)
    by_state = dict(cards.values_list("state").annotate(n=Count("pk")).values_list("state", "n"))
    card_states = _bars([{"state": s, "n": by_state.get(s, 0)} for s in CardState.values])
    stations = list(station_list(actor=request.user).filter(tenant=tenant))
    versions: list[dict] = list(
        key_version_list(actor=request.user).filter(slot__tenant=tenant,
                                                    state__in=(VersionState.ACTIVE, VersionState.PENDING,
                                                               VersionState.RETIRED))
        .values("slot__role", "slot__key_no", "number", "state")
        .annotate(n=Count("pk"), grace=Min("grace_until"))
        .order_by("slot__role", "slot__key_no", "-number", "state"))
    midnight = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    since = midnight - timedelta(days=RATE_DAYS - 1)
    per_day = dict(job_list(actor=request.user).filter(tenant=tenant, finished_at__gte=since)
                   .annotate(day=TruncDate("finished_at")).values_list("day")
                   .annotate(n=Count("pk", filter=Q(state=JobState.SUCCEEDED))).values_list("day", "n"))
    days = [(since + timedelta(days=i)).date() for i in range(RATE_DAYS)]
    return render(request, "web/dashboard.html", {
        "provisioned": _bars([{"day": d, "n": per_day.get(d, 0)} for d in days]),
        "card_states": card_states, "card_total": sum(by_state.values()),
        "stations_online": sum(s.online for s in stations), "stations_total": len(stations),
        "key_versions": _bars(versions), "open_alerts": open_alert_count(request),
    })
