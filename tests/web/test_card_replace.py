"""The card page's Replace action: the old card revoked with its reason, an order for the new UID with the
old card's profile, both audited; a bad UID is named and nothing changes."""
from __future__ import annotations

import pytest
from django.urls import reverse

from audit.models import AuditEvent
from cards.models import Order
from tests.web.conftest import web_client

pytestmark = pytest.mark.django_db


def test_replace_from_the_card_page_revokes_and_orders_the_new_card(acme_world, admin):
    card, profile = acme_world["card"], acme_world["profile"]
    body = web_client(admin).get(reverse("web:card", kwargs={"pk": card.pk})).content.decode()
    assert 'id="replace-form"' in body
    page = web_client(admin).post(reverse("web:card_replace", kwargs={"pk": card.pk}),
                                  {"new_uid": "04a1b2c3d4e5f7", "reason": "damaged"}, follow=True)
    assert "04A1B2C3D4E5F7 gets profile" in page.content.decode()
    card.refresh_from_db()
    assert (card.state, card.state_reason) == ("revoked", "damaged")
    order = Order.objects.get(uids=["04A1B2C3D4E5F7"])
    assert order.profile_id == profile.pk and order.tenant_id == card.tenant_id
    assert AuditEvent.objects.filter(action="card.revoked", card_uid=card.uid).exists()
    assert AuditEvent.objects.get(action="card.replaced", card_uid="04A1B2C3D4E5F7").details["replaces"] \
        == card.uid


def test_replace_with_a_bad_uid_names_the_field_and_changes_nothing(acme_world, admin):
    card = acme_world["card"]
    page = web_client(admin).post(reverse("web:card_replace", kwargs={"pk": card.pk}),
                                  {"new_uid": "04XYZ", "reason": "lost"}, follow=True).content.decode()
    assert "new_uid" in page
    page = web_client(admin).post(reverse("web:card_replace", kwargs={"pk": card.pk}),
                                  {"new_uid": card.uid, "reason": "lost"}, follow=True).content.decode()
    assert "already known" in page
    card.refresh_from_db()
    assert card.state == "active" and list(Order.objects.all()) == [acme_world["order"]]


def test_replace_needs_a_recent_password(acme_world, admin):
    card = acme_world["card"]
    response = web_client(admin, recent_auth=False).post(
        reverse("web:card_replace", kwargs={"pk": card.pk}), {"new_uid": "04A1B2C3D4E5F7", "reason": "lost"})
    assert response.status_code == 302 and "/reauth/" in response["Location"]
    card.refresh_from_db()
    assert card.state == "active"
