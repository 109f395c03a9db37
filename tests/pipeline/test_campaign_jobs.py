"""Rotation campaigns through the pipeline: a paused campaign's versions are not sent, and the job result
that activates a campaign's version moves the campaign on at once (real OpenBao, station double)."""
from __future__ import annotations

import datetime

import pytest

from audit.models import AuditEvent
from cards.models import Card, Job
from keys import campaigns
from keys.models_campaigns import CampaignState, ItemState

from .conftest import DESFIRE_UID

pytestmark = [pytest.mark.vault, pytest.mark.django_db]


def _user(name: str, tenant):
    from django.contrib.auth import get_user_model

    from cms.models import Membership

    user = get_user_model().objects.create_user(username=name, password=None)
    Membership.objects.create(user=user, tenant=tenant, role="admin")
    return user


@pytest.fixture
def provisioned(cms, station, desfire_profile, order_for):
    """A DESFire card the pipeline provisioned: every key slot has an active version."""
    order_for(desfire_profile)
    cms.report(station.report("card_presented", uid=DESFIRE_UID))
    assert cms.result(station.result(cms.last_envelope()))["state"] == "succeeded"
    card = Card.objects.get(uid=DESFIRE_UID)
    assert card.state == "active"
    return card


@pytest.fixture
def running_campaign(acme, provisioned):
    """A random-key campaign over the application's file keys (slots 1 and 2), its batch created."""
    admin, second = _user("alice", acme), _user("carol", acme)
    campaign = campaigns.campaign_create(actor=admin, tenant=acme, name="app-keys-2026", roles=["app_key"],
                                         target="random", batch_size=10, grace_days=7)
    campaign = campaigns.campaign_approve(actor=second, campaign=campaign)
    campaign = campaigns.campaign_start(actor=admin, campaign=campaign)
    assert campaigns.campaign_run_batch(campaign_id=campaign.pk) == 2
    campaign.admin = admin
    return campaign


def _change_keys(envelope: dict) -> list[dict]:
    return [s for s in envelope["script"]["steps"] if s["op"] == "desfire.change_key"]


def test_a_paused_campaign_sends_nothing_and_resumed_it_rotates_the_card(cms, station, provisioned,
                                                                         running_campaign, sent):
    campaign = running_campaign
    owed = {item.new_version_id for item in campaign.items.all()}
    campaigns.campaign_pause(actor=campaign.admin, campaign=campaign)

    # paused: the card keeps its active keys, no job carries the campaign's versions
    answer = cms.report(station.report("card_presented", uid=DESFIRE_UID))
    assert answer["status"] == "nothing_to_do"
    assert len(sent) == 1  # only the provisioning job

    campaigns.campaign_resume(actor=campaign.admin, campaign=campaign)
    answer = cms.report(station.report("card_presented", uid=DESFIRE_UID))
    assert answer["status"] == "dispatched"
    envelope = cms.last_envelope()
    changes = _change_keys(envelope)
    assert {s["confirms"]["key_version"] for s in changes} == owed
    outcome = cms.result(station.result(envelope))
    assert outcome["state"] == "succeeded" and "activated" not in outcome

    # no campaign_sync by hand: the result moved the campaign
    campaign.refresh_from_db()
    progress = campaigns.campaign_progress(campaign)
    assert progress["rotated"] == 2 and campaign.state == CampaignState.COMPLETED
    for item in campaign.items.select_related("previous_version", "new_version"):
        assert (item.state, item.new_version.state, item.previous_version.state) == (
            ItemState.ROTATED, "active", "retired")
        assert item.previous_version.grace_until - item.previous_version.retired_at == \
            datetime.timedelta(days=7)  # the campaign's grace, not the global one
    assert AuditEvent.objects.filter(action="keys.campaign_card_rotated").count() == 2
    assert Job.objects.get(pk=envelope["job_id"]).state == "succeeded"


def test_an_interrupted_rotation_leaves_the_campaign_item_pending(cms, station, provisioned,
                                                                  running_campaign):
    cms.report(station.report("card_presented", uid=DESFIRE_UID))
    envelope = cms.last_envelope()
    steps = envelope["script"]["steps"]
    first_change = next(i for i, s in enumerate(steps) if s["op"] == "desfire.change_key")
    cms.result(station.result(envelope, state="interrupted", upto=first_change,
                              statuses={first_change: "in_flight"},
                              error={"step": first_change, "kind": "CardRemovedError", "message": "removed"}))
    progress = campaigns.campaign_progress(running_campaign)
    assert progress["rotated"] == 0
    assert set(running_campaign.items.values_list("state", flat=True)) == {ItemState.PENDING}
