"""Alerts of the current tenant: the list (filter by state) and acknowledge."""
from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from audit.alerts import alert_acknowledge, alert_list
from audit.models import AlertState
from cms.web.access import current, may, page

LIVE = "live"


def open_alert_count(request) -> int | None:
    """Open alerts of the current tenant for the dashboard, or None when the role may not see alerts."""
    if not may(request, "view_audit"):
        return None
    tenant, _ = current(request)
    tenant_id = tenant.pk if tenant else -1
    return alert_list(actor=request.user, state=AlertState.OPEN, tenant_id=tenant_id).count()


@page("view_audit")
def alerts(request):
    tenant, _ = current(request)
    state = request.GET.get("state", LIVE)
    queryset = alert_list(actor=request.user, tenant_id=tenant.pk if tenant else -1)
    if state == LIVE:
        queryset = queryset.exclude(state=AlertState.CLOSED)
    elif state in AlertState.values:
        queryset = queryset.filter(state=state)
    else:
        state = "all"
    return render(request, "web/alerts.html", {
        "alerts": Paginator(queryset, 50).get_page(request.GET.get("page")), "state": state,
        "states": [LIVE, *AlertState.values, "all"], "query": f"state={state}"})


@page("manage")
@require_POST
def alert_ack(request, pk: int):
    tenant, _ = current(request)
    alert = get_object_or_404(alert_list(actor=request.user, tenant_id=tenant.pk if tenant else -1), pk=pk)
    try:
        alert_acknowledge(actor=request.user, alert=alert, note=request.POST.get("note", "")[:200])
        messages.success(request, f"Alert {alert.pk} acknowledged.")
    except ValidationError as exc:
        messages.error(request, "; ".join(exc.messages))
    return redirect("web:alerts")
