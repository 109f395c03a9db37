"""Logins, logouts and failed logins are audited; a failed login keeps the username, never the password."""
from __future__ import annotations

import json

import pytest
from django.contrib.auth import get_user_model

from audit.models import AuditEvent

pytestmark = pytest.mark.django_db
PASSWORD = "correct horse battery staple"


@pytest.fixture
def alice():
    return get_user_model().objects.create_user("alice", password=PASSWORD, is_staff=True)


def test_successful_admin_login_records_the_user_and_request_id(client, alice):
    response = client.post("/admin/login/?next=/admin/", {"username": "alice", "password": PASSWORD},
                           HTTP_X_REQUEST_ID="login-req-1")
    assert response.status_code == 302
    event = AuditEvent.objects.get(action="auth.login")
    assert (event.actor_type, event.actor_name, event.actor_id) == ("user", "alice", str(alice.pk))
    assert (event.result, event.request_id) == ("success", "login-req-1")


def test_failed_login_records_the_attempted_username_and_never_the_password(client, alice):
    wrong = "not-the-password-xyz"
    response = client.post("/admin/login/", {"username": "alice", "password": wrong})
    assert response.status_code == 200
    event = AuditEvent.objects.get(action="auth.login_failed")
    assert (event.result, event.actor_type, event.actor_name) == ("failure", "anonymous", "alice")
    assert event.details["attempted_username"] == "alice"
    stored = json.dumps([list(AuditEvent.objects.values())], default=str)
    assert wrong not in stored and PASSWORD not in stored
    assert not AuditEvent.objects.filter(action="auth.login").exists()


def test_failed_login_for_an_unknown_user_is_recorded_too(client):
    client.post("/admin/login/", {"username": "mallory", "password": "guess-guess-guess"})
    assert AuditEvent.objects.get(action="auth.login_failed").actor_name == "mallory"


def test_logout_is_recorded(client, alice):
    client.force_login(alice)
    client.post("/admin/logout/")
    assert AuditEvent.objects.filter(action="auth.logout", actor_name="alice").exists()
