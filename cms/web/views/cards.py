"""Tenants, profiles, stations, orders, jobs and cards: lists, details and lifecycle actions."""
from __future__ import annotations

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from audit.errors import AuditError
from audit.selectors import audit_event_list
from cardproto.sw import describe
from cards.models.cards import CardState, ChipType
from cards.selectors import card_list, job_list, order_list, profile_list, station_list, tenant_list
from cards.services import lifecycle, stations
from cms.errors import KeystoreError
from cms.web.access import current, may, page, reauth_required
from keys.selectors import key_slot_list

PAGE_SIZE = 50
# Vault sealed or unreachable: audited changes fail closed; the page says so instead of a 500.
UNAVAILABLE = (KeystoreError, AuditError)


def _page(request, queryset):
    return Paginator(queryset, PAGE_SIZE).get_page(request.GET.get("page"))


def _error_messages(exc: ValidationError) -> str:
    if hasattr(exc, "message_dict"):
        return "; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in exc.message_dict.items())
    return " ".join(exc.messages)


@page("view")
def tenants(request):
    return render(request, "web/tenants.html", {"tenants": tenant_list(actor=request.user)})


@page("view")
def profiles(request):
    tenant, _ = current(request)
    return render(request, "web/profiles.html",
                  {"profiles": _page(request, profile_list(actor=request.user).filter(tenant=tenant))})


@page("view")
def profile_detail(request, pk: int):
    profile = get_object_or_404(profile_list(actor=request.user), pk=pk)
    return render(request, "web/profile_detail.html", {"profile": profile})


@page("view")
def station_index(request):
    tenant, _ = current(request)
    return render(request, "web/stations.html",
                  {"stations": station_list(actor=request.user).filter(tenant=tenant)})


@page("manage")
@require_POST
def station_approve(request, pk: int):
    station = get_object_or_404(station_list(actor=request.user), pk=pk)
    try:
        stations.station_approve(actor=request.user, station=station)
        messages.success(request, f"Station {station.code} approved.")
    except ValidationError as exc:
        messages.error(request, _error_messages(exc))
    return redirect("web:stations")


class RevokeStationForm(forms.Form):
    reason = forms.CharField(max_length=200, required=False)


@page("manage")
@require_POST
@reauth_required
def station_revoke(request, pk: int):
    station = get_object_or_404(station_list(actor=request.user), pk=pk)
    form = RevokeStationForm(request.POST)
    form.is_valid()
    stations.station_revoke(actor=request.user, station=station, reason=form.cleaned_data.get("reason", ""))
    messages.success(request, f"Station {station.code} revoked.")
    return redirect("web:stations")


@page("view")
def orders(request):
    tenant, _ = current(request)
    return render(request, "web/orders.html",
                  {"orders": _page(request, order_list(actor=request.user).filter(tenant=tenant))})


@page("view")
def order_detail(request, pk: int):
    order = get_object_or_404(order_list(actor=request.user), pk=pk)
    return render(request, "web/order_detail.html",
                  {"order": order, "jobs": job_list(actor=request.user, order_id=order.pk)})


def _sw_of(entry) -> dict | None:
    """The status word of a trace entry or error, with its meaning, if it names one."""
    if not isinstance(entry, dict) or entry.get("sw") in (None, ""):
        return None
    raw = entry["sw"]
    try:
        value = int(raw, 16) if isinstance(raw, str) else int(raw)
    except ValueError:
        return None
    info = describe(value)
    return {"sw": f"{value:04X}", "meaning": info.meaning, "action": str(info.action)}


@page("view")
def job_detail(request, pk):
    job = get_object_or_404(job_list(actor=request.user), pk=pk)
    trace = [{"entry": e, "sw": _sw_of(e)} for e in (job.trace or [])]
    return render(request, "web/job_detail.html", {"job": job, "trace": trace, "error_sw": _sw_of(job.error)})


class CardFilter(forms.Form):
    state = forms.ChoiceField(choices=[("", "any state"), *CardState.choices], required=False)
    uid = forms.RegexField(r"^[0-9A-Fa-f]{0,20}$", required=False)


@page("view")
def cards(request):
    tenant, _ = current(request)
    form = CardFilter(request.GET or None)
    filters = form.cleaned_data if form.is_valid() else {}
    qs = card_list(actor=request.user, uid=filters.get("uid") or None, state=filters.get("state") or None)
    return render(request, "web/cards.html",
                  {"cards": _page(request, qs.filter(tenant=tenant)), "form": form})


class SuspendForm(forms.Form):
    reason = forms.CharField(max_length=200, required=False)


class RevokeCardForm(forms.Form):
    reason = forms.ChoiceField(choices=lifecycle.RevokeReason.choices)


@page("view")
def card_detail(request, pk: int):
    card = get_object_or_404(card_list(actor=request.user), pk=pk)
    history = audit_event_list(actor=request.user, filters={"card_uid": card.uid})[:100] \
        if may(request, "view_audit") else None
    return render(request, "web/card_detail.html", {
        "card": card, "slots": key_slot_list(actor=request.user, card_uid=card.uid),
        "jobs": job_list(actor=request.user, card_uid=card.uid)[:50], "history": history,
        "suspend_form": SuspendForm(), "revoke_form": RevokeCardForm(), "replace_form": ReplaceCardForm()})


def _card_action(request, pk: int, action):
    card = get_object_or_404(card_list(actor=request.user), pk=pk)
    try:
        action(card)
    except ValidationError as exc:
        messages.error(request, _error_messages(exc))
    except UNAVAILABLE as exc:
        messages.error(request, f"Nothing was changed: {exc}")
    return redirect("web:card", pk=card.pk)


@page("manage")
@require_POST
def card_suspend(request, pk: int):
    form = SuspendForm(request.POST)
    form.is_valid()
    return _card_action(request, pk, lambda card: (
        lifecycle.card_suspend(actor=request.user, card=card, reason=form.cleaned_data.get("reason", "")),
        messages.success(request, f"Card {card.uid} suspended.")))


@page("manage")
@require_POST
def card_resume(request, pk: int):
    return _card_action(request, pk, lambda card: (
        lifecycle.card_resume(actor=request.user, card=card),
        messages.success(request, f"Card {card.uid} resumed.")))


@page("manage")
@require_POST
@reauth_required
def card_revoke(request, pk: int):
    form = RevokeCardForm(request.POST)
    if not form.is_valid():
        card = get_object_or_404(card_list(actor=request.user), pk=pk)
        messages.error(request, "reason: choose lost, stolen, damaged or compromised")
        return redirect("web:card", pk=card.pk)
    return _card_action(request, pk, lambda card: (
        lifecycle.card_revoke(actor=request.user, card=card, reason=form.cleaned_data["reason"]),
        messages.success(request, f"Card {card.uid} revoked ({form.cleaned_data['reason']}).")))


class ReplaceCardForm(RevokeCardForm):
    new_uid = forms.CharField(max_length=20, label="New card UID")


@page("manage")
@require_POST
@reauth_required
def card_replace(request, pk: int):
    form = ReplaceCardForm(request.POST)
    if not form.is_valid():
        card = get_object_or_404(card_list(actor=request.user), pk=pk)
        messages.error(request, "; ".join(f"{field}: {' '.join(errors)}"
                                          for field, errors in form.errors.items()))
        return redirect("web:card", pk=card.pk)
    data = form.cleaned_data
    return _card_action(request, pk, lambda card: (
        lifecycle.card_replace(actor=request.user, card=card, new_uid=data["new_uid"], reason=data["reason"]),
        messages.success(request, f"Card {card.uid} revoked ({data['reason']}); card "
                                  f"{data['new_uid'].upper()} gets profile {card.profile} when presented.")))


class PlanForm(forms.Form):
    uid = forms.RegexField(r"^[0-9A-Fa-f]{8,20}$", required=False, label="card UID",
                           help_text="a registered card (its key ledger is used) or a new one")
    chip_type = forms.ChoiceField(choices=[("", "from the card"), *ChipType.choices], required=False)

    def clean(self):
        data = super().clean()
        if not data.get("uid") and not data.get("chip_type"):
            raise ValidationError("give a card UID, a chip type, or both")
        return data


@page("view")
def profile_plan(request, pk: int):
    """Dry run: the steps a card would get from this profile now (key refs only; no Vault, no keys)."""
    from cards.services.jobs import plan_preview  # the compiler's service (issue 4)

    profile = get_object_or_404(profile_list(actor=request.user), pk=pk)
    form = PlanForm(request.GET or None)
    plan, problem = None, ""
    if form.is_bound and form.is_valid():
        try:
            plan = plan_preview(actor=request.user, profile=profile, uid=form.cleaned_data["uid"] or "",
                                chip_type=form.cleaned_data["chip_type"] or "").as_dict()
        except ValidationError as exc:
            problem = _error_messages(exc)
    return render(request, "web/profile_plan.html",
                  {"profile": profile, "form": form, "plan": plan, "problem": problem})
