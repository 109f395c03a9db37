"""The alert rules against real audit events and stations (real OpenBao holds the chain key)."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from audit import alerts
from audit.models import Alert, AuditEvent
from audit.services import record_event
from cards import alerts as card_alerts
from cards.models import Station
from cards.models.stations import StationStatus
from tests.audit.tamper import raw, triggers_off

pytestmark = pytest.mark.django_db


def _failed_auth(tenant, *, uid: str, station: str, n: int = 1):
    for _ in range(n):
        record_event(action="card.authenticated", actor_type="station", actor_name=station, tenant=tenant,
                     result="failure", card_uid=uid,
                     details={"op": "desfire.authenticate", "status": "failed"})


def _live(rule: str):
    return Alert.objects.filter(rule=rule).exclude(state="closed")


def test_repeated_failed_authentications_open_one_alert_per_card_and_per_station(acme, settings):
    settings.ALERT_FAILED_AUTH_THRESHOLD = 3
    _failed_auth(acme, uid="04A1B2C3D4E5F6", station="line-1", n=2)
    _failed_auth(acme, uid="04FFFFFFFFFF01", station="line-1", n=1)
    summary = card_alerts.alerts_run_rules()
    assert summary[alerts.FAILED_AUTH_CARD]["opened"] == 0  # 2 on one card: below the threshold
    assert summary[alerts.FAILED_AUTH_STATION]["opened"] == 1  # 3 at the station
    station_alert = _live(alerts.FAILED_AUTH_STATION).get()
    assert (station_alert.subject, station_alert.count) == ("station:line-1", 3)
    assert station_alert.tenant_id == acme.pk
    assert AuditEvent.objects.filter(action="alert.opened", tenant_id=acme.pk).count() == 1

    _failed_auth(acme, uid="04A1B2C3D4E5F6", station="line-1", n=1)
    summary = card_alerts.alerts_run_rules()
    card_alert = _live(alerts.FAILED_AUTH_CARD).get()
    assert card_alert.subject == "card:04A1B2C3D4E5F6" and card_alert.count == 3
    # dedup: the station's open alert is updated with the one new event, not opened again
    station_alert.refresh_from_db()
    assert station_alert.count == 4 and _live(alerts.FAILED_AUTH_STATION).count() == 1
    assert summary[alerts.FAILED_AUTH_STATION] == {"opened": 0, "updated": 1, "closed": 0}


def test_a_failed_auth_alert_closes_when_the_window_has_passed(acme, settings):
    settings.ALERT_FAILED_AUTH_THRESHOLD = 2
    _failed_auth(acme, uid="04A1B2C3D4E5F6", station="line-1", n=2)
    card_alerts.alerts_run_rules()
    later = timezone.now() + timedelta(seconds=settings.ALERT_FAILED_AUTH_WINDOW_SECONDS + 1)
    card_alerts.alerts_run_rules(now=later)
    assert not _live(alerts.FAILED_AUTH_CARD).exists()
    closed = Alert.objects.get(rule=alerts.FAILED_AUTH_CARD)
    assert closed.state == "closed" and closed.closed_at == later
    assert AuditEvent.objects.filter(action="alert.closed").count() == 2  # card and station


def test_other_failures_and_successes_do_not_count(acme, settings):
    settings.ALERT_FAILED_AUTH_THRESHOLD = 1
    record_event(action="card.authenticated", actor_type="station", actor_name="line-1", tenant=acme,
                 card_uid="04A1B2C3D4E5F6")  # success
    record_event(action="card.file_written", actor_type="station", actor_name="line-1", tenant=acme,
                 result="failure", card_uid="04A1B2C3D4E5F6")
    card_alerts.alerts_run_rules()
    assert not Alert.objects.exists()


def test_key_unwraps_above_the_rate_threshold_open_an_alert_per_tenant(acme, globex, settings):
    settings.ALERT_UNWRAP_THRESHOLD = 10
    record_event(action="keys.unwrapped", tenant=acme, details={"count": 6, "purpose": "job"})
    record_event(action="keys.unwrapped", tenant=acme, details={"count": 5, "purpose": "job"})
    record_event(action="keys.unwrapped", tenant=globex, details={"count": 9, "purpose": "job"})
    card_alerts.alerts_run_rules()
    alert = _live(alerts.KEY_UNWRAP_RATE).get()
    assert (alert.tenant_id, alert.subject) == (acme.pk, "tenant:acme")
    assert (alert.details["keys"], alert.count) == (11, 2)
    assert "11 keys unwrapped" in alert.message


def _station(tenant, code="acme-line-1", **fields):
    return Station.objects.create(tenant=tenant, code=code, status=StationStatus.APPROVED,
                                  approved_at=timezone.now() - timedelta(days=1), heartbeat_seconds=30,
                                  **fields)


def test_a_station_silent_past_its_heartbeat_opens_an_alert_that_closes_when_it_is_back(acme, settings):
    settings.ALERT_STATION_HEARTBEAT_MISSES = 3
    station = _station(acme, last_seen_at=timezone.now() - timedelta(seconds=91))
    _station(acme, code="acme-line-2", last_seen_at=timezone.now() - timedelta(seconds=30))
    Station.objects.create(tenant=acme, code="acme-line-3", status=StationStatus.REVOKED,
                           last_seen_at=timezone.now() - timedelta(days=3))
    card_alerts.alerts_run_rules()
    alert = _live(alerts.STATION_SILENT).get()
    assert alert.subject == "station:acme-line-1" and "silent for 9" in alert.message

    Station.objects.filter(pk=station.pk).update(last_seen_at=timezone.now())
    assert card_alerts.alerts_run_rules()[alerts.STATION_SILENT]["closed"] == 1


def test_an_approved_station_never_heard_from_counts_from_its_approval(acme):
    Station.objects.create(tenant=acme, code="acme-line-9", status=StationStatus.APPROVED,
                           approved_at=timezone.now() - timedelta(hours=1))
    card_alerts.alerts_run_rules()
    assert _live(alerts.STATION_SILENT).get().subject == "station:acme-line-9"


def test_a_station_seen_from_another_ip_than_it_enrolled_from_opens_an_alert(acme, settings):
    station = _station(acme, last_seen_at=timezone.now(), last_ip="10.1.2.3")
    record_event(action="station.enrolled", actor_type="station", actor_name=station.code, tenant=acme,
                 details={"station": station.code, "ip": "10.1.2.3"})
    card_alerts.alerts_run_rules()
    assert not _live(alerts.STATION_UNEXPECTED_IP).exists()

    Station.objects.filter(pk=station.pk).update(last_ip="192.0.2.77")
    card_alerts.alerts_run_rules()
    alert = _live(alerts.STATION_UNEXPECTED_IP).get()
    assert alert.message == "station acme-line-1 seen from 192.0.2.77, expected 10.1.2.3"

    # an allowed network list replaces the enrolment IP as what is expected
    settings.ALERT_STATION_ALLOWED_NETWORKS = ["192.0.2.0/24"]
    assert card_alerts.alerts_run_rules()[alerts.STATION_UNEXPECTED_IP]["closed"] == 1
    settings.ALERT_STATION_ALLOWED_NETWORKS = ["10.0.0.0/8"]
    card_alerts.alerts_run_rules()
    assert "expected 10.0.0.0/8" in _live(alerts.STATION_UNEXPECTED_IP).get().message


def test_a_broken_audit_chain_opens_an_alert_in_every_tenant(acme, globex):
    assert card_alerts.alerts_check_audit_chain() == {"opened": 0, "updated": 0, "closed": 0}
    event = record_event(action="card.suspended", tenant=acme, card_uid="04A1B2C3D4E5F6",
                         details={"reason": "lost"})
    with triggers_off():
        raw("UPDATE audit_auditevent SET details = %s WHERE id = %s", ['{"reason": "found"}', event.pk])
    assert card_alerts.alerts_check_audit_chain()["opened"] == 2
    found = {(a.tenant_slug, a.subject) for a in _live(alerts.AUDIT_CHAIN)}
    assert found == {("acme", "audit-chain"), ("globex", "audit-chain")}
    assert f"event #{event.sequence}" in _live(alerts.AUDIT_CHAIN).first().message
    # the next walk finds it still broken: the same alerts, updated
    assert card_alerts.alerts_check_audit_chain() == {"opened": 0, "updated": 2, "closed": 0}


def test_the_beat_schedule_runs_the_rules_and_the_tasks_are_registered(settings):
    from cms.celery import app

    tasks = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert {"alerts.run_rules", "alerts.audit_chain", "webhooks.collect"} <= tasks
    app.loader.import_default_modules()
    assert {"alerts.run_rules", "alerts.audit_chain", "webhooks.collect", "webhooks.deliver"} \
        <= set(app.tasks)


def test_an_unknown_rule_or_a_finding_of_another_rule_is_refused(acme):
    with pytest.raises(ValueError, match="unknown alert rule"):
        alerts.alerts_apply("nope", [])
    finding = alerts.Finding(alerts.TenantRef(acme.pk, acme.slug), alerts.STATION_SILENT, "station:x", "m")
    with pytest.raises(ValueError, match="given to rule"):
        alerts.alerts_apply(alerts.AUDIT_CHAIN, [finding])
