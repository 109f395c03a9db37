"""The dashboard: cards per state, stations online, and which key version each slot role is on."""
from __future__ import annotations

from django.db.models import Count, Min
from django.shortcuts import render

from cards.models.cards import CardState
from cards.selectors import card_list, station_list
from cms.web.access import current, page
from keys.models import VersionState
from keys.selectors import key_version_list


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
    return render(request, "web/dashboard.html", {
        "card_states": card_states, "card_total": sum(by_state.values()),
        "stations_online": sum(s.online for s in stations), "stations_total": len(stations),
        "key_versions": _bars(versions),
    })
