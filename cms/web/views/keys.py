"""Rotation campaigns (create, second admin approves, start, pause, resume, roll back) and KEK rotation."""
from __future__ import annotations

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from cms.scoping import restrict
from cms.web.access import current, page, reauth_required
from cms.web.views.cards import UNAVAILABLE, _error_messages
from keys import campaigns as svc
from keys.models import KeyRole, MasterKeyVersion, VersionState
from keys.models_campaigns import CampaignState, CampaignTarget, KekRotation, RotationCampaign
from keys.selectors import master_key_list


def _campaigns(request):
    return restrict(RotationCampaign.objects.select_related("tenant", "created_by", "approved_by",
                                                            "master_version__master"), request.user, "manage")


class CampaignForm(forms.Form):
    name = forms.CharField(max_length=100)
    roles = forms.MultipleChoiceField(choices=KeyRole.choices, widget=forms.CheckboxSelectMultiple,
                                      label="key slot roles")
    target = forms.ChoiceField(choices=CampaignTarget.choices)
    master_version = forms.ModelChoiceField(queryset=MasterKeyVersion.objects.none(), required=False,
                                            help_text="for diversified keys: the new master key version")
    batch_size = forms.IntegerField(min_value=1, max_value=1000, initial=100)
    grace_days = forms.IntegerField(min_value=0, max_value=3650, initial=30, label="grace period (days)")

    def __init__(self, *args, tenant=None, actor=None, **kwargs):
        super().__init__(*args, **kwargs)
        masters = master_key_list(actor=actor).filter(tenant=tenant)
        self.fields["master_version"].queryset = MasterKeyVersion.objects.filter(
            master__in=masters, state__in=(VersionState.PENDING, VersionState.ACTIVE),
        ).select_related("master")


@page("manage")
def campaign_list(request):
    tenant, _ = current(request)
    form = CampaignForm(request.POST or None, tenant=tenant, actor=request.user)
    if request.method == "POST" and form.is_valid():
        try:
            campaign = svc.campaign_create(actor=request.user, tenant=tenant, **form.cleaned_data)
        except ValidationError as exc:
            for field, errors in exc.message_dict.items():
                form.add_error(field if field in form.fields else None, errors)
        else:
            messages.success(request, f"Campaign {campaign.name} created. A second admin must approve it.")
            return redirect("web:campaign", pk=campaign.pk)
    items = [(c, svc.campaign_progress(c)) for c in _campaigns(request).filter(tenant=tenant)[:100]]
    return render(request, "web/campaigns.html", {"campaigns": items, "form": form})


@page("manage")
def campaign_detail(request, pk: int):
    campaign = get_object_or_404(_campaigns(request), pk=pk)
    if campaign.state in (CampaignState.RUNNING, CampaignState.PAUSED, CampaignState.ROLLED_BACK):
        svc.campaign_sync(campaign)  # take in the cards that jobs rotated since
        campaign.refresh_from_db()
    progress = svc.campaign_progress(campaign)
    total = progress["total"] or 1
    bar = {name: round(100 * progress[name] / total, 1) for name in ("rotated", "pending", "failed")}
    return render(request, "web/campaign_detail.html", {
        "campaign": campaign, "progress": progress, "bar": bar,
        "overdue": svc.campaign_overdue_items(campaign)[:200],
        "failed_items": campaign.items.filter(state="failed").select_related("card", "slot")[:200],
        "is_creator": campaign.created_by_id == request.user.pk})


def _campaign_action(request, pk: int, action, done: str):
    campaign = get_object_or_404(_campaigns(request), pk=pk)
    try:
        action(actor=request.user, campaign=campaign)
        messages.success(request, done)
    except PermissionDenied as exc:
        # past the scoping above, this is the second-person rule (refused and audited): say why
        messages.error(request, str(exc))
    except (svc.CampaignError, ValidationError) as exc:
        messages.error(request, _error_messages(exc) if isinstance(exc, ValidationError) else str(exc))
    except UNAVAILABLE as exc:
        messages.error(request, f"Nothing was changed: {exc}")
    return redirect("web:campaign", pk=campaign.pk)


@page("manage")
@require_POST
@reauth_required
def campaign_approve(request, pk: int):
    return _campaign_action(request, pk, svc.campaign_approve, "Campaign approved.")


@page("manage")
@require_POST
def campaign_start(request, pk: int):
    return _campaign_action(request, pk, svc.campaign_start, "Campaign started: pending versions are "
                                                             "created in batches.")


@page("manage")
@require_POST
def campaign_pause(request, pk: int):
    return _campaign_action(request, pk, svc.campaign_pause, "Campaign paused.")


@page("manage")
@require_POST
def campaign_resume(request, pk: int):
    return _campaign_action(request, pk, svc.campaign_resume, "Campaign resumed.")


@page("manage")
@require_POST
@reauth_required
def campaign_rollback(request, pk: int):
    return _campaign_action(request, pk, svc.campaign_rollback, "Campaign rolled back.")


@page("manage")
@require_POST
def campaign_cancel(request, pk: int):
    return _campaign_action(request, pk, svc.campaign_cancel, "Campaign cancelled.")


class KekRequestForm(forms.Form):
    reason = forms.CharField(max_length=200, required=False)


def _rotations(request):
    return restrict(KekRotation.objects.select_related("tenant", "requested_by", "approved_by"),
                    request.user, "manage")


@page("manage")
def kek(request):
    tenant, _ = current(request)
    form = KekRequestForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            svc.kek_rotation_request(actor=request.user, tenant=tenant, reason=form.cleaned_data["reason"])
            messages.success(request, "KEK rotation requested. A second admin must approve it.")
            return redirect("web:kek")
        except ValidationError as exc:
            messages.error(request, _error_messages(exc))
    return render(request, "web/kek.html", {"form": form,
                                            "rotations": _rotations(request).filter(tenant=tenant)[:50]})


@page("manage")
@require_POST
@reauth_required
def kek_approve(request, pk: int):
    rotation = get_object_or_404(_rotations(request), pk=pk)
    try:
        svc.kek_rotation_approve(actor=request.user, rotation=rotation)
        messages.success(request, "KEK rotation approved: it runs now.")
    except (PermissionDenied, svc.CampaignError) as exc:
        messages.error(request, str(exc))
    except UNAVAILABLE as exc:
        messages.error(request, f"Nothing was changed: {exc}")
    return redirect("web:kek")
