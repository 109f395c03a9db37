"""Signing in: the login form, lockout after repeated failures, idle timeout, re-authentication,
the tenant switcher and a menu that follows the role."""
from __future__ import annotations

import time

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse

from audit.models import AuditEvent
from cms.web.access import SESSION_REAUTH
from tests.web.conftest import PASSWORD, make_user, web_client

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice_pw(acme):
    return make_user("alice", [(acme, "admin")], password=PASSWORD)


def test_login_form_signs_in_and_counts_as_recent_authentication(alice_pw):
    client = Client()
    response = client.post("/login/", {"username": "alice", "password": PASSWORD})
    assert response.status_code == 302 and response["Location"] == "/"
    assert client.session[SESSION_REAUTH] > time.time() - 5
    assert client.get("/").status_code == 200
    assert AuditEvent.objects.filter(action="auth.login", actor_name="alice").exists()


def test_wrong_password_is_refused_and_audited_without_the_password(alice_pw):
    response = Client().post("/login/", {"username": "alice", "password": "guess-guess-guess"})
    assert response.status_code == 200 and b"correct username and password" in response.content
    event = AuditEvent.objects.get(action="auth.login_failed")
    assert "guess-guess-guess" not in str(event.details)


def test_lockout_after_the_failure_limit_even_with_the_right_password(alice_pw):
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post("/login/", {"username": "alice", "password": "wrong-wrong-wrong"})
    response = client.post("/login/", {"username": "alice", "password": PASSWORD})
    assert response.status_code == 429
    assert b"Account locked" in response.content
    assert "_auth_user_id" not in client.session
    locked = AuditEvent.objects.filter(action="auth.locked_out").order_by("sequence").first()
    assert (locked.actor_name, locked.result) == ("alice", "failure")


def test_session_is_an_idle_timeout():
    assert settings.SESSION_COOKIE_AGE <= 3600
    assert settings.SESSION_SAVE_EVERY_REQUEST and settings.SESSION_EXPIRE_AT_BROWSER_CLOSE


def test_sensitive_action_without_recent_password_goes_to_the_prompt_and_changes_nothing(acme_world, admin):
    card = acme_world["card"]
    client = web_client(admin, recent_auth=False)
    page = reverse("web:card", kwargs={"pk": card.pk})
    response = client.post(reverse("web:card_revoke", kwargs={"pk": card.pk}), {"reason": "lost"},
                           HTTP_REFERER=f"http://testserver{page}")
    assert response.status_code == 302 and response["Location"].startswith("/reauth/")
    card.refresh_from_db()
    assert card.state == "active"


def test_reauth_prompt_checks_the_password_then_allows_the_action(acme, acme_world):
    user = make_user("zoe", [(acme, "admin")], password=PASSWORD)
    client = web_client(user, recent_auth=False)
    card = acme_world["card"]
    back = reverse("web:card", kwargs={"pk": card.pk})
    wrong = client.post(f"/reauth/?next={back}", {"password": "not-it-at-all"})
    assert wrong.status_code == 200 and b"wrong password" in wrong.content
    right = client.post("/reauth/", {"password": PASSWORD, "next": back})
    assert right.status_code == 302 and right["Location"] == back
    response = client.post(reverse("web:card_revoke", kwargs={"pk": card.pk}), {"reason": "stolen"})
    assert response.status_code == 302 and response["Location"] == back
    card.refresh_from_db()
    assert (card.state, card.state_reason) == ("revoked", "stolen")


def test_reauth_window_expires(acme_world, admin, settings):
    client = web_client(admin)
    session = client.session
    session[SESSION_REAUTH] = time.time() - settings.REAUTH_WINDOW_SECONDS - 1
    session.save()
    card = acme_world["card"]
    response = client.post(reverse("web:card_revoke", kwargs={"pk": card.pk}), {"reason": "lost"})
    assert response["Location"].startswith("/reauth/")


def test_reauth_refuses_an_outside_next_url(admin):
    client = web_client(admin, recent_auth=False)
    response = client.get("/reauth/?next=https://evil.example/")
    assert b"evil.example" not in response.content


def test_tenant_switcher_changes_what_every_page_shows(acme_world, acme, globex):
    both = make_user("maria", [(acme, "auditor"), (globex, "admin")])
    client = web_client(both)
    dashboard = client.get("/").content.decode()
    assert 'id="tenant-switcher"' in dashboard
    # first tenant (acme): auditor, so no key rotation menu and acme's cards
    assert "Key rotation" not in dashboard and "auditor" in dashboard
    assert "04A1B2C3D4E5F6" in client.get("/cards/").content.decode()
    response = client.post(reverse("web:switch_tenant"), {"tenant": globex.pk, "next": "/cards/"})
    assert response.status_code == 302 and response["Location"] == "/cards/"
    cards = client.get("/cards/").content.decode()
    assert "04A1B2C3D4E5F6" not in cards and "Key rotation" in cards


def test_menus_follow_the_role(acme_world, admin, operator, auditor):
    menus = {user.username: web_client(user).get("/").content.decode() for user in (admin, operator, auditor)}
    assert all(label in menus["alice"] for label in ("Key rotation", "KEK rotation", "Audit"))
    assert "Audit" not in menus["oscar"] and "Key rotation" not in menus["oscar"]
    assert "Audit" in menus["audrey"] and "Key rotation" not in menus["audrey"]


def test_logout_ends_the_session(admin):
    client = web_client(admin)
    assert client.post("/logout/").status_code == 302
    assert client.get("/").status_code == 302
