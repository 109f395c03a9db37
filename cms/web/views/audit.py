"""The audit trail: filters, CSV/JSON export and a "verify chain" button that runs audit.verify."""
from __future__ import annotations

import csv
import json

from django import forms
from django.core.paginator import Paginator
from django.http import HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_POST

from audit.selectors import audit_event_list
from audit.verify import audit_chain_verify
from cms.web.access import current, page

EXPORT_FIELDS = ["sequence", "created_at", "actor_type", "actor_name", "request_id", "job_id",
                 "tenant_slug", "action", "result", "card_uid", "aid", "key_no", "key_version", "details",
                 "prev_hash", "hash"]
EXPORT_LIMIT = 100_000


class AuditFilter(forms.Form):
    action = forms.CharField(max_length=64, required=False)
    result = forms.CharField(max_length=32, required=False)
    actor_name = forms.CharField(max_length=150, required=False, label="actor")
    card_uid = forms.RegexField(r"^[0-9A-Fa-f]{1,32}$", required=False, label="card UID")
    aid = forms.RegexField(r"^[0-9A-Fa-f]{1,32}$", required=False, label="AID")
    job_id = forms.CharField(max_length=64, required=False, label="job id")
    since = forms.DateTimeField(required=False, help_text="YYYY-MM-DD [HH:MM]")
    until = forms.DateTimeField(required=False)

    def clean(self):
        data = super().clean()
        if data.get("since") and data.get("until") and data["since"] >= data["until"]:
            self.add_error("until", "must be after since")
        return data


def _events(request):
    """(form, queryset) for the current tenant; an invalid filter shows its errors and no events."""
    tenant, _ = current(request)
    form = AuditFilter(request.GET or None)
    if form.is_bound and not form.is_valid():
        return form, None
    filters = dict(form.cleaned_data) if form.is_bound else {}
    filters["tenant_slug"] = tenant.slug if tenant else None
    return form, audit_event_list(actor=request.user, filters=filters)


@page("view_audit")
def audit(request):
    form, events = _events(request)
    query = request.GET.copy()
    query.pop("page", None)
    return render(request, "web/audit.html", {
        "form": form, "events": Paginator(events, 50).get_page(request.GET.get("page")) if events is not None
        else None, "query": query.urlencode()})


def _cell(value):
    """Spreadsheets run a cell that starts with = + - @ as a formula: quote it (CSV only)."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


def _row(event) -> dict:
    row = {name: getattr(event, name) for name in EXPORT_FIELDS}
    row["created_at"] = event.created_at.isoformat()
    return row


@page("view_audit")
def audit_export(request, fmt: str):
    form, events = _events(request)
    if events is None:
        problems = "; ".join(f"{k}: {' '.join(v)}" for k, v in form.errors.items())
        return HttpResponse("invalid filter: " + problems, status=400, content_type="text/plain")
    events = events[:EXPORT_LIMIT].iterator(chunk_size=1000)
    if fmt == "json":
        body = json.dumps([_row(e) for e in events], indent=1, default=str)
        response = HttpResponse(body, content_type="application/json")
    else:
        class Echo:
            def write(self, value):
                return value

        writer = csv.writer(Echo())

        def lines():
            yield writer.writerow(EXPORT_FIELDS)
            for event in events:
                row = _row(event)
                row["details"] = json.dumps(row["details"], sort_keys=True)
                yield writer.writerow([_cell(row[name]) for name in EXPORT_FIELDS])
        response = StreamingHttpResponse(lines(), content_type="text/csv")
    response["Content-Disposition"] = f'attachment; filename="audit.{fmt}"'
    return response


@page("view_audit")
@require_POST
def audit_verify(request):
    """Walks the WHOLE chain (it is one chain for all tenants); shows only the verdict and position."""
    result = audit_chain_verify()
    return render(request, "web/audit_verify.html", {"result": result})
