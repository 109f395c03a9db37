"""Alerts in the web UI and the API: the tenant's admins and auditors read, its admins acknowledge;
another tenant's admin and anonymous callers get nothing."""
from __future__ import annotations

import pytest
from django.urls import reverse
from django.utils import timezone

from audit.models import Alert, AuditEvent
from tests.alerts.conftest import api_client, web_client

pytestmark = pytest.mark.django_db


@pytest.fixture
def alert(acme):
    now = timezone.now()
    return Alert.objects.create(tenant_id=acme.pk, tenant_slug=acme.slug, rule="station_silent",
                                subject="station:acme-line-1", message="station acme-line-1 silent for 600 s",
                                first_seen_at=now, last_seen_at=now)


def test_owner_lists_reads_and_acknowledges_through_the_api(alert, admin):
    client = api_client(admin)
    listed = client.get("/api/v1/alerts/?state=open").json()["results"]
    assert [a["id"] for a in listed] == [alert.pk] and listed[0]["tenant"] == "acme"
    assert client.get(f"/api/v1/alerts/{alert.pk}/").json()["subject"] == "station:acme-line-1"
    response = client.post(f"/api/v1/alerts/{alert.pk}/acknowledge/", {"note": "technician sent"},
                           format="json")
    assert response.status_code == 200, response.content
    assert response.json()["state"] == "acknowledged" and response.json()["acknowledged_by"] == "alice"
    event = AuditEvent.objects.get(action="alert.acknowledged")
    assert (event.tenant_id, event.actor_name) == (alert.tenant_id, "alice")
    assert event.details["note"] == "technician sent"
    # a second acknowledge is a 400 naming the state
    again = client.post(f"/api/v1/alerts/{alert.pk}/acknowledge/", {}, format="json")
    assert again.status_code == 400 and "state" in again.json()


def test_bad_filters_are_a_400_naming_the_field(alert, admin):
    response = api_client(admin).get("/api/v1/alerts/?state=burning")
    assert response.status_code == 400 and "state" in response.json()


def test_auditor_reads_but_cannot_acknowledge_and_operator_sees_nothing(alert, auditor, operator):
    assert api_client(auditor).get(f"/api/v1/alerts/{alert.pk}/").status_code == 200
    assert api_client(auditor).post(f"/api/v1/alerts/{alert.pk}/acknowledge/", {}, format="json") \
        .status_code == 403
    assert api_client(operator).get("/api/v1/alerts/").json()["results"] == []
    alert.refresh_from_db()
    assert alert.state == "open"


def test_admin_of_another_tenant_and_anonymous_get_nothing(alert, other_admin):
    client = api_client(other_admin)
    assert client.get("/api/v1/alerts/").json()["results"] == []
    assert client.get(f"/api/v1/alerts/{alert.pk}/").status_code == 404
    assert client.post(f"/api/v1/alerts/{alert.pk}/acknowledge/", {}, format="json").status_code == 404
    assert api_client().get("/api/v1/alerts/").status_code == 401
    assert api_client().post(f"/api/v1/alerts/{alert.pk}/acknowledge/", {}, format="json").status_code == 401
    alert.refresh_from_db()
    assert alert.state == "open" and not AuditEvent.objects.filter(action="alert.acknowledged").exists()


def test_the_alerts_page_lists_and_acknowledges_and_the_dashboard_counts_open_ones(alert, admin):
    client = web_client(admin)
    assert b'id="open-alerts">1<' in client.get(reverse("web:dashboard")).content
    page = client.get(reverse("web:alerts")).content.decode()
    assert "station acme-line-1 silent for 600 s" in page and "Acknowledge" in page
    response = client.post(reverse("web:alert_ack", args=[alert.pk]), {"note": "on it"}, follow=True)
    assert f"Alert {alert.pk} acknowledged." in response.content.decode()
    alert.refresh_from_db()
    assert alert.state == "acknowledged"
    assert b'id="open-alerts">0<' in client.get(reverse("web:dashboard")).content
    # closed alerts are behind the state filter
    Alert.objects.filter(pk=alert.pk).update(state="closed", closed_at=timezone.now())
    assert "silent for 600 s" not in client.get(reverse("web:alerts")).content.decode()
    assert "silent for 600 s" in client.get(reverse("web:alerts") + "?state=closed").content.decode()


def test_the_dashboard_shows_no_alert_count_to_operators(alert, operator):
    assert b"open-alerts" not in web_client(operator).get(reverse("web:dashboard")).content
