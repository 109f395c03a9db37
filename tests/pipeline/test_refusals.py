"""Everything that must be refused with an audit event and change nothing: reports, envelopes, results."""
from __future__ import annotations

import time
import uuid

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from audit.models import AuditEvent
from cards.models import Card, Job, Station
from keys.models import KeyVersion
from readeragent import protocol

from .conftest import DESFIRE_UID, StationDouble, cms_public_key

pytestmark = [pytest.mark.vault, pytest.mark.django_db]


def _refusals(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action, result="failure").order_by("sequence"))


@pytest.fixture
def dispatched(cms, station, desfire_profile, order_for):
    order_for(desfire_profile)
    cms.report(station.report("card_presented", uid=DESFIRE_UID))
    return cms.last_envelope()


@pytest.fixture
def other_station(acme):
    double = StationDouble(code=f"other-{uuid.uuid4().hex[:6]}")
    double.model = Station.objects.create(tenant=acme, code=double.code, status="approved",
                                          hpke_public_key=double.hpke_public_hex,
                                          sign_public_key=double.sign_public_hex)
    return double


def _ledger_snapshot():
    return sorted(KeyVersion.objects.values_list("pk", "state"))


# --- reports -------------------------------------------------------------------------------------------

def test_report_with_a_forged_signature_is_refused_and_makes_no_card(cms, station, desfire_profile, order_for,
                                                                     sent):
    order_for(desfire_profile)
    forged = protocol.sign_with({k: v for k, v in station.report("card_presented", uid=DESFIRE_UID).items()},
                                Ed25519PrivateKey.generate())
    assert cms.report(forged) == {"status": "refused", "reason": "signature"}
    assert not Card.objects.exists() and not sent
    assert _refusals("station.report_refused")[-1].details["reason"] == "signature"


def test_report_of_an_unapproved_or_unknown_station_is_refused(cms, station, desfire_profile, order_for,
                                                                sent):
    order_for(desfire_profile)
    Station.objects.filter(pk=station.model.pk).update(status="enrolled")
    assert cms.report(station.report("card_presented", uid=DESFIRE_UID))["reason"] == "station"
    ghost = StationDouble(code="ghost")
    assert cms.report(ghost.report("heartbeat"))["reason"] == "station"
    assert not sent and len(_refusals("station.report_refused")) == 2


def test_stale_or_tampered_report_is_refused(cms, station, desfire_profile, order_for, sent):
    order_for(desfire_profile)
    old = station.report("card_presented", uid=DESFIRE_UID, at=time.time() - 3600)
    assert cms.report(old)["reason"] == "stale"
    tampered = station.report("card_presented", uid=DESFIRE_UID)
    tampered["uid"] = "04AABBCCDDEEFF"
    assert cms.report(tampered)["reason"] == "signature"
    assert not sent


def test_heartbeat_updates_last_seen(cms, station):
    assert cms.report(station.report("heartbeat")) == {"status": "ok"}
    station.model.refresh_from_db()
    assert station.model.last_seen_at is not None and station.model.online


def test_redelivered_report_makes_one_job(cms, station, desfire_profile, order_for, sent):
    order_for(desfire_profile)
    report = station.report("card_presented", uid=DESFIRE_UID)
    first = cms.report(report)
    again = cms.report(report)
    assert again == {"status": "duplicate", "job": first["job"]}
    assert Job.objects.count() == 1 and len(sent) == 1


def test_redelivered_report_after_its_job_ended_makes_nothing_new(cms, station, desfire_profile, order_for,
                                                                  sent):
    """The report is not looked up before the work (one SELECT per card less): a copy whose job is still open
    is found with the card's open jobs, one whose job has ended by the job's unique presentation key."""
    order_for(desfire_profile)
    report = station.report("card_presented", uid=DESFIRE_UID)
    first = cms.report(report)
    interrupted = station.result(sent[-1][1], state="interrupted", upto=2,
                                 error={"kind": "CardRemovedError", "message": "the card left the field"})
    assert cms.result(interrupted)["state"] == "interrupted"
    events = AuditEvent.objects.count()
    versions = list(KeyVersion.objects.values_list("pk", "state"))
    assert cms.report(report) == {"status": "duplicate", "job": first["job"]}
    assert Job.objects.count() == 1 and len(sent) == 1
    # everything the copy began (its job's events, key versions) was rolled back with it
    assert AuditEvent.objects.count() == events
    assert list(KeyVersion.objects.values_list("pk", "state")) == versions


def test_card_with_a_job_in_progress_gets_no_second_job(cms, station, dispatched, sent):
    answer = cms.report(station.report("card_presented", uid=DESFIRE_UID))
    assert answer == {"status": "refused", "reason": "busy"}
    assert len(sent) == 1


def test_card_without_an_order_gets_no_job(cms, station, desfire_profile, sent):
    assert cms.report(station.report("card_presented", uid=DESFIRE_UID))["reason"] == "no_order"
    assert not sent


def test_card_of_another_tenant_is_refused(cms, station, globex, desfire_profile, order_for, sent):
    order_for(desfire_profile)
    Card.objects.create(tenant=globex, uid=DESFIRE_UID, chip_type="desfire_ev2")
    assert cms.report(station.report("card_presented", uid=DESFIRE_UID))["reason"] == "tenant"
    assert not sent


# --- the envelope as the agent sees it -------------------------------------------------------------------

def test_envelope_is_signed_by_vault_transit_and_bound_to_station_job_and_expiry(station, dispatched,
                                                                                 other_station):
    envelope = dispatched
    assert envelope["expires_at"] - envelope["issued_at"] == 30
    protocol.check_envelope(envelope, station=station.code, cms_public_key=cms_public_key())
    with pytest.raises(protocol.ProtocolError) as expired:
        protocol.check_envelope(envelope, station=station.code, cms_public_key=cms_public_key(),
                                now=envelope["expires_at"] + 1)
    assert expired.value.reason == "expired"
    with pytest.raises(protocol.ProtocolError) as other:
        protocol.check_envelope(envelope, station=other_station.code, cms_public_key=cms_public_key())
    assert other.value.reason == "station"
    tampered = {**envelope, "script": {**envelope["script"], "steps": envelope["script"]["steps"][:3]}}
    with pytest.raises(protocol.ProtocolError) as changed:
        protocol.check_envelope(tampered, station=station.code, cms_public_key=cms_public_key())
    assert changed.value.reason == "signature"
    with pytest.raises(protocol.ProtocolError):  # another station's private key does not open the keys
        protocol.open_keys(envelope["sealed_keys"], private_key=X25519PrivateKey.generate(),
                           job_id=envelope["job_id"], station=station.code, expires_at=envelope["expires_at"])
    with pytest.raises(protocol.ProtocolError):  # nor does moving them to another job
        protocol.open_keys(envelope["sealed_keys"], private_key=station.hpke, job_id=str(uuid.uuid4()),
                           station=station.code, expires_at=envelope["expires_at"])


def test_ttl_comes_from_settings(cms, station, desfire_profile, order_for, settings):
    settings.CMS_JOB_TTL_SECONDS = 5  # seed 002's recommendation
    order_for(desfire_profile)
    cms.report(station.report("card_presented", uid=DESFIRE_UID))
    envelope = cms.last_envelope()
    assert envelope["expires_at"] - envelope["issued_at"] == 5


# --- results -------------------------------------------------------------------------------------------

def test_forged_tampered_and_foreign_results_are_refused_and_change_nothing(cms, station, other_station,
                                                                             dispatched):
    before = _ledger_snapshot()
    forged = station.result(dispatched, sign_with=Ed25519PrivateKey.generate())
    assert cms.result(forged) == {"status": "refused", "reason": "signature"}
    tampered = station.result(dispatched, state="failed")
    tampered["state"] = "succeeded"
    assert cms.result(tampered)["reason"] == "signature"
    # another approved station answers for this job, under its own name or under ours
    assert cms.result(other_station.result(dispatched))["reason"] == "station"
    posing = other_station.result({**dispatched}, station=station.code)
    assert cms.result(protocol.sign_with(posing, other_station.sign))["reason"] == "signature"
    unknown = station.result({**dispatched, "job_id": str(uuid.uuid4())})
    assert cms.result(unknown)["reason"] == "unknown_job"
    assert _ledger_snapshot() == before
    assert Job.objects.get(pk=dispatched["job_id"]).state == "dispatched"
    reasons = [e.details["reason"] for e in _refusals("job.result_refused")]
    assert reasons == ["signature", "signature", "station", "signature", "unknown_job"]


def test_replayed_result_is_refused_and_counts_once(cms, station, dispatched):
    result = station.result(dispatched)
    assert cms.result(result)["state"] == "succeeded"
    changed = AuditEvent.objects.filter(action="card.key_changed").count()
    assert changed == 4
    assert cms.result(result) == {"status": "refused", "reason": "replay"}
    job = Job.objects.select_related("order").get(pk=dispatched["job_id"])
    assert job.order.cards_done == 1
    assert AuditEvent.objects.filter(action="card.key_changed").count() == changed


def test_result_steps_that_do_not_match_the_script_are_refused(cms, station, dispatched):
    doc = station.result(dispatched)
    doc["steps"][2]["op"] = "desfire.write_data"
    assert cms.result(protocol.sign_with(doc, station.sign))["reason"] == "malformed"
    assert {s for _, s in _ledger_snapshot()} == {"pending"}


def test_result_confirms_are_taken_from_the_script_not_from_the_result(cms, station, dispatched):
    doc = station.result(dispatched, upto=2)  # select and authenticate only: no key changed
    doc["steps"][1]["confirms"] = {"key_version": dispatched["script"]["steps"][2]["confirms"]["key_version"]}
    doc["state"] = "failed"
    cms.result(protocol.sign_with(doc, station.sign))
    assert {s for _, s in _ledger_snapshot()} == {"pending"}


def test_agent_refusal_leaves_the_ledger_alone(cms, station, dispatched):
    refused = station.result(dispatched, state="refused", upto=0,
                             error={"kind": "ProtocolError", "message": "job expired before it started"})
    assert cms.result(refused)["state"] == "refused"
    assert {s for _, s in _ledger_snapshot()} == {"pending"}
    assert Card.objects.get(uid=DESFIRE_UID).state == "provisioning"


def test_result_of_a_revoked_station_is_refused(cms, station, dispatched):
    Station.objects.filter(pk=station.model.pk).update(status="revoked")
    assert cms.result(station.result(dispatched))["reason"] == "station"
    assert {s for _, s in _ledger_snapshot()} == {"pending"}


def test_order_naming_the_uid_for_another_station_is_not_taken_here(cms, station, other_station,
                                                                    desfire_profile, sent):
    from cards.models import Order

    Order.objects.create(tenant=station.model.tenant, profile=desfire_profile, station=other_station.model,
                         uids=[DESFIRE_UID], quantity=1, idempotency_key="named",
                         request_fingerprint="0" * 64)
    assert cms.report(station.report("card_presented", uid=DESFIRE_UID))["reason"] == "no_order"
    assert cms.report(other_station.report("card_presented", uid=DESFIRE_UID))["status"] == "dispatched"
    assert [queue for queue, _ in sent] == [f"station.{other_station.code}"]
