"""Beat's expiry sweep (`cards.expire_jobs`) and the station's reported IP addresses (real OpenBao)."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.utils import timezone

from audit.models import AuditEvent
from cards import tasks
from cards.models import Card, Job, Station

from .conftest import DESFIRE_UID

pytestmark = [pytest.mark.vault, pytest.mark.django_db]


def test_beat_schedules_the_expiry_sweep():
    entry = django_settings.CELERY_BEAT_SCHEDULE["jobs-expiry-sweep"]
    assert entry["task"] == "cards.expire_jobs" and entry["schedule"] == 60
    assert tasks.expire_jobs.name == "cards.expire_jobs"


def test_sweep_fails_a_job_that_can_no_longer_report_and_flags_its_card(cms, station, desfire_profile,
                                                                        order_for, sent):
    order_for(desfire_profile)
    cms.report(station.report("card_presented", uid=DESFIRE_UID))
    lost = cms.last_envelope()
    assert tasks.expire_jobs.run() == {"cards": 0, "expired": 0}  # still within its expiry: left alone
    assert Job.objects.get(pk=lost["job_id"]).state == "dispatched"

    Job.objects.filter(pk=lost["job_id"]).update(created_at=timezone.now() - timedelta(hours=1))
    assert tasks.expire_jobs.run() == {"cards": 1, "expired": 1}
    job = Job.objects.get(pk=lost["job_id"])
    assert job.state == "failed" and job.error["kind"] == "NoResult" and job.finished_at
    card = Card.objects.get(uid=DESFIRE_UID)
    assert card.probe_required  # before the card is presented again
    event = AuditEvent.objects.get(action="job.expired", job_id=lost["job_id"])
    assert event.result == "failure" and event.details["probe_required"] is True
    assert tasks.expire_jobs.run() == {"cards": 0, "expired": 0}  # nothing twice
    assert len(sent) == 1  # the sweep never sends anything to a card

    # the next presentation probes (nothing authenticates) instead of running the job again
    cms.report(station.report("card_presented", uid=DESFIRE_UID))
    probe = cms.last_envelope()["script"]["steps"]
    assert all(s["op"] != "desfire.authenticate" for s in probe)
    assert any(str(s.get("label", "")).startswith("probe.") for s in probe)


def test_heartbeat_ips_set_last_ip_and_a_change_is_audited(cms, station):
    answer = cms.report(station.report("heartbeat", ips=["127.0.0.1", "fe80::1", "10.20.0.7", "192.0.2.9"]))
    assert answer == {"status": "ok"}
    model = Station.objects.get(pk=station.model.pk)
    assert model.last_ip == "10.20.0.7" and model.last_seen_at is not None
    cms.report(station.report("heartbeat", ips=["10.20.0.7"]))
    assert AuditEvent.objects.filter(action="station.ip_changed").count() == 1

    cms.report(station.report("heartbeat", ips=["10.99.0.1"]))
    assert Station.objects.get(pk=station.model.pk).last_ip == "10.99.0.1"
    changes = list(AuditEvent.objects.filter(action="station.ip_changed").order_by("sequence"))
    assert [(e.details["ip"], e.details["previous"]) for e in changes] == [("10.20.0.7", ""),
                                                                          ("10.99.0.1", "10.20.0.7")]
    # nothing usable, or not a list: last_ip is kept
    cms.report(station.report("heartbeat", ips=["::1", "not-an-ip"]))
    cms.report(station.report("heartbeat", ips="10.1.1.1"))
    assert Station.objects.get(pk=station.model.pk).last_ip == "10.99.0.1"


def test_ips_are_covered_by_the_station_signature(cms, station):
    report = station.report("heartbeat", ips=["10.20.0.7"])
    report["ips"] = ["203.0.113.66"]  # changed on the way: the signature no longer matches
    assert cms.report(report)["status"] == "refused"
    assert Station.objects.get(pk=station.model.pk).last_ip is None
