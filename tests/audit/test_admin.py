"""The Django admin shows audit events and offers no way to add, change or delete them."""
from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission

from audit.models import AuditEvent
from audit.services import record_event
from cms.models import Membership

pytestmark = pytest.mark.django_db
CHANGELIST = "/admin/audit/auditevent/"


@pytest.fixture
def root(client):
    user = get_user_model().objects.create_superuser("root", password="not-used-in-tests-0")
    client.force_login(user)
    return user


def test_superuser_sees_the_list_and_an_event(client, root):
    event = record_event(action="test.admin")
    assert client.get(CHANGELIST).status_code == 200
    page = client.get(f"{CHANGELIST}{event.pk}/change/")
    assert page.status_code == 200
    assert b"test.admin" in page.content
    assert b'name="_save"' not in page.content


def test_add_change_and_delete_are_refused_even_for_a_superuser(client, root):
    event = record_event(action="test.admin")
    assert client.get(f"{CHANGELIST}add/").status_code == 403
    assert client.post(f"{CHANGELIST}{event.pk}/change/", {"result": "failure"}).status_code == 403
    assert client.post(f"{CHANGELIST}{event.pk}/delete/", {"post": "yes"}).status_code == 403
    response = client.post(CHANGELIST, {"action": "delete_selected", "_selected_action": [event.pk]})
    assert response.status_code in (200, 302)
    assert AuditEvent.objects.get(pk=event.pk).result == "success"


def test_staff_auditor_sees_only_their_tenants_events_in_the_admin(client, tenant, other_tenant):
    staff = get_user_model().objects.create_user("audrey", password="not-used-in-tests-0", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_auditevent"))
    Membership.objects.create(user=staff, tenant=tenant, role="auditor")
    mine = record_event(action="test.mine", tenant=tenant)
    theirs = record_event(action="test.theirs", tenant=other_tenant)
    client.force_login(staff)
    assert client.get(f"{CHANGELIST}{mine.pk}/change/").status_code == 200
    assert client.get(f"{CHANGELIST}{theirs.pk}/change/").status_code == 302  # "does not exist" redirect
    listing = client.get(CHANGELIST).content
    assert b"test.mine" in listing and b"test.theirs" not in listing
