"""Live parts without JavaScript: job, order and campaign pages reload themselves (meta refresh) while
something is still moving, and stop once it has settled."""
from __future__ import annotations

import pytest
from django.urls import reverse

from tests.web.conftest import web_client

pytestmark = pytest.mark.django_db
REFRESH = 'http-equiv="refresh"'


def _body(user, name: str, pk) -> str:
    return web_client(user).get(reverse(f"web:{name}", kwargs={"pk": pk})).content.decode()


def test_job_page_refreshes_while_the_job_is_open(acme_world, operator):
    job = acme_world["job"]
    assert REFRESH not in _body(operator, "job", job.pk)  # failed: settled
    for state in ("created", "dispatched", "running"):
        job.state = state
        job.save(update_fields=["state"])
        assert REFRESH in _body(operator, "job", job.pk), state


def test_order_page_refreshes_while_the_order_is_open(acme_world, operator):
    order = acme_world["order"]
    for state, live in (("open", True), ("in_progress", True), ("completed", False), ("failed", False)):
        order.state = state
        order.save(update_fields=["state"])
        assert (REFRESH in _body(operator, "order", order.pk)) is live, state


def test_campaign_page_refreshes_while_running_or_re_keying_back(acme_world, admin):
    from keys.models_campaigns import CampaignItem

    campaign, card, slot = acme_world["campaign"], acme_world["card"], acme_world["slot"]
    assert REFRESH not in _body(admin, "campaign", campaign.pk)  # awaiting approval
    item = CampaignItem.objects.create(campaign=campaign, card=card, slot=slot,
                                       previous_version=slot.versions.get(), state="waiting")
    campaign.state = "running"  # (a running campaign with nothing left to rotate completes when shown)
    campaign.save(update_fields=["state"])
    assert REFRESH in _body(admin, "campaign", campaign.pk)
    item.state = "cancelled"
    item.save(update_fields=["state"])
    campaign.state = "rolled_back"
    campaign.save(update_fields=["state"])
    assert REFRESH not in _body(admin, "campaign", campaign.pk)
    item.state = "rekey_back"
    item.save(update_fields=["state"])
    assert REFRESH in _body(admin, "campaign", campaign.pk)  # cards still owe their old key back
    item.state = "restored"
    item.save(update_fields=["state"])
    assert REFRESH not in _body(admin, "campaign", campaign.pk)
