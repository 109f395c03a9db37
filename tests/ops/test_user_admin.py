"""Django's user admin stays writable for superusers, and every privilege it grants or takes is audited."""
from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission

from audit.models import AuditEvent

pytestmark = [pytest.mark.vault, pytest.mark.django_db]


@pytest.fixture
def root(vault):
    return get_user_model().objects.create_superuser("root", "root@example.com", "a-long-root-password")


@pytest.fixture
def bob(vault):
    return get_user_model().objects.create_user("bob", password="a-long-bob-password")


def _change_form(user, **overrides) -> dict:
    data = {"username": user.username, "first_name": "", "last_name": "", "email": "",
            "is_active": "on", "date_joined_0": "2026-01-01", "date_joined_1": "00:00:00",
            "initial-date_joined_0": "2026-01-01", "initial-date_joined_1": "00:00:00"}
    data.update(overrides)
    return {key: value for key, value in data.items() if value is not None}


def test_making_a_user_superuser_is_audited_with_the_admin_as_actor(client, root, bob):
    client.force_login(root)
    response = client.post(f"/admin/auth/user/{bob.pk}/change/",
                           _change_form(bob, is_staff="on", is_superuser="on"))
    assert response.status_code == 302, response.content[:2000]
    bob.refresh_from_db()
    assert bob.is_superuser and bob.is_staff
    event = AuditEvent.objects.get(action="user.privileges_changed")
    assert (event.actor_type, event.actor_name) == ("user", "root")
    assert event.details == {"user": "bob", "changed": {"is_staff": {"before": False, "after": True},
                                                        "is_superuser": {"before": False, "after": True}}}


def test_granting_a_django_permission_is_audited(client, root, bob):
    client.force_login(root)
    permission = Permission.objects.get(codename="change_user")
    response = client.post(f"/admin/auth/user/{bob.pk}/change/",
                           _change_form(bob, user_permissions=str(permission.pk)))
    assert response.status_code == 302, response.content[:2000]
    event = AuditEvent.objects.get(action="user.permissions_changed")
    assert event.details["after"]["permissions"] == ["auth.change_user"]
    assert not AuditEvent.objects.filter(action="user.privileges_changed").exists()


def test_creating_and_deleting_a_user_is_audited_and_no_password_is_stored(client, root):
    client.force_login(root)
    password = "carol-has-a-long-password"
    response = client.post("/admin/auth/user/add/", {"username": "carol", "password1": password,
                                                     "password2": password, "usable_password": "true"})
    assert response.status_code == 302, response.content[:2000]
    carol = get_user_model().objects.get(username="carol")
    assert AuditEvent.objects.get(action="user.created").details["user"] == "carol"
    response = client.post(f"/admin/auth/user/{carol.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert AuditEvent.objects.get(action="user.deleted").actor_name == "root"
    assert password not in str(list(AuditEvent.objects.values()))


def test_without_the_audit_key_the_change_is_refused(client, root, bob, vault):
    from audit.chainkey import forget_chain_key

    client.force_login(root)
    vault.seal()
    forget_chain_key()  # as in a process that has not read the chain key yet
    client.raise_request_exception = False
    response = client.post(f"/admin/auth/user/{bob.pk}/change/", _change_form(bob, is_superuser="on"))
    assert response.status_code == 500
    bob.refresh_from_db()
    assert not bob.is_superuser
