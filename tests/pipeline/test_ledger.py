"""What a result does to the ledger: quarantine on a refused authentication, in-flight -> probe -> resume."""
from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from audit.models import AuditEvent
from cardproto.sw import describe
from cards.models import Card, Job
from keys.models import KeyVersion

from .conftest import DESFIRE_UID

pytestmark = [pytest.mark.vault, pytest.mark.django_db]


def _versions(card) -> dict[str, KeyVersion]:
    from cards.services.jobs import slot_label

    return {slot_label(v.slot): v for v in KeyVersion.objects.filter(slot__card=card).select_related(
        "slot__application")}


@pytest.fixture
def owner(acme):
    from django.contrib.auth import get_user_model

    from cms.models import Membership

    user = get_user_model().objects.create_user(username="alice", password=None)
    Membership.objects.create(user=user, tenant=acme, role="admin")
    return user


def test_refused_authentication_quarantines_the_card_until_a_person_releases_it(
        cms, station, desfire_profile, order_for, sent, owner):
    order_for(desfire_profile)
    cms.report(station.report("card_presented", uid=DESFIRE_UID))
    envelope = cms.last_envelope()
    error = {"step": 1, "op": "desfire.authenticate", "apdu": "90AA000001", "sw": "91AE",
             "kind": "AuthenticationRejectedError", "message": "authenticate: card answered SW 91AE"}
    outcome = cms.result(station.result(envelope, state="failed", upto=1, statuses={1: "failed"},
                                        error=error))
    assert outcome["quarantined"] is True
    card = Card.objects.get(uid=DESFIRE_UID)
    assert card.state == "quarantined"
    meaning = describe(0x91AE).meaning  # filled in by the CMS when the agent sends only the SW
    assert "SW 91AE" in card.state_reason and meaning in card.state_reason
    job = Job.objects.get(pk=envelope["job_id"])
    assert job.state == "failed" and job.error["sw"] == "91AE" and job.error["meaning"] == meaning
    assert {v.state for v in _versions(card).values()} == {"pending"}
    assert AuditEvent.objects.filter(action="card.quarantined", card_uid=DESFIRE_UID).count() == 1
    assert AuditEvent.objects.filter(action="card.authenticated", result="failure").count() == 1

    # presented again: nothing is sent, so nothing authenticates to it (zero automatic retries)
    assert cms.report(station.report("card_presented", uid=DESFIRE_UID))["reason"] == "card_state"
    assert len(sent) == 1

    client = APIClient()
    response = client.post(f"/api/v1/cards/{card.pk}/release/", {"reason": "wrong reader"}, format="json")
    assert response.status_code in (401, 403)
    client.force_login(owner)
    response = client.post(f"/api/v1/cards/{card.pk}/release/", {}, format="json")
    assert response.status_code == 400 and "reason" in response.json()
    response = client.post(f"/api/v1/cards/{card.pk}/release/", {"reason": "transport key checked"},
                           format="json")
    assert response.status_code == 200, response.content
    assert response.json()["state"] == "provisioning"
    assert AuditEvent.objects.get(action="card.released").details["reason"] == "transport key checked"
    assert client.post(f"/api/v1/cards/{card.pk}/release/", {"reason": "again"},
                       format="json").status_code == 400
    assert cms.report(station.report("card_presented", uid=DESFIRE_UID))["status"] == "dispatched"


def test_card_removed_mid_change_key_is_probed_then_resumed_from_the_first_step_not_done(
        cms, station, desfire_profile, order_for, sent):
    order = order_for(desfire_profile)
    cms.report(station.report("card_presented", uid=DESFIRE_UID))
    first = cms.last_envelope()
    steps = first["script"]["steps"]
    change_1 = next(i for i, s in enumerate(steps) if s.get("label") == "app.F0A001.1.change")
    removed = {"step": change_1, "op": "desfire.change_key", "kind": "CardRemovedError",
               "message": "card left the field"}
    outcome = cms.result(station.result(first, state="interrupted", upto=change_1,
                                        statuses={change_1: "in_flight"}, error=removed))
    assert outcome == {"status": "recorded", "job": first["job_id"], "state": "interrupted",
                       "quarantined": False, "probe_required": True}
    card = Card.objects.get(uid=DESFIRE_UID)
    versions = _versions(card)
    assert versions["picc.0"].state == "active"  # ChangeKey done, then authenticated with it
    assert versions["app.F0A001.1"].state == "pending"  # sent, never confirmed
    assert card.probe_required

    # re-presented: a probe first, with no authentication at all
    cms.report(station.report("card_presented", uid=DESFIRE_UID))
    probe = cms.last_envelope()
    assert probe["script"]["steps"] == [
        {"op": "desfire.select_application", "aid": "F0A001"},
        {"op": "desfire.get_key_version", "key_no": 1, "label": "probe.app.F0A001.1"}]
    assert probe["sealed_keys"]  # an empty key map is still sealed
    # the card answers with the pending version's number: it took the new key
    number = versions["app.F0A001.1"].number
    outcome = cms.result(station.result(probe, observed={1: {"key_version": number}}))
    assert outcome["next_job"]
    versions = _versions(card)
    assert versions["app.F0A001.1"].state == "active"
    card.refresh_from_db()
    assert not card.probe_required

    resumed = cms.last_envelope()
    assert resumed["job_id"] == outcome["next_job"]
    labels = [s.get("label") for s in resumed["script"]["steps"] if s.get("label")]
    assert labels[0] == "app.F0A001.2.change"
    assert "picc.0.change" not in labels and "app.F0A001.create" not in labels
    assert "app.F0A001.1.change" not in labels
    assert Job.objects.get(pk=resumed["job_id"]).resumes_id is not None
    cms.result(station.result(resumed))
    card.refresh_from_db()
    assert card.state == "active"
    assert {v.state for v in _versions(card).values()} == {"active"}
    order.refresh_from_db()
    assert order.cards_done == 1 and order.state == "completed"


def test_probe_showing_the_old_key_keeps_the_version_pending_and_sends_the_change_again(
        cms, station, desfire_profile, order_for):
    order_for(desfire_profile)
    cms.report(station.report("card_presented", uid=DESFIRE_UID))
    first = cms.last_envelope()
    steps = first["script"]["steps"]
    change_0 = next(i for i, s in enumerate(steps) if s.get("label") == "picc.0.change")
    cms.result(station.result(first, state="interrupted", upto=change_0, statuses={change_0: "in_flight"},
                              error={"step": change_0, "kind": "CardRemovedError", "message": "removed"}))
    cms.report(station.report("card_presented", uid=DESFIRE_UID))
    probe = cms.last_envelope()
    assert probe["script"]["steps"][1] == {"op": "desfire.get_key_version", "key_no": 0,
                                           "label": "probe.picc.0"}
    outcome = cms.result(station.result(probe, observed={1: {"key_version": 0}}))  # still the factory key
    card = Card.objects.get(uid=DESFIRE_UID)
    assert _versions(card)["picc.0"].state == "pending" and not card.probe_required
    again = cms.last_envelope()
    assert again["job_id"] == outcome["next_job"]
    assert again["script"]["steps"][:3] == steps[:3]  # transport key again, same pending version


def test_interrupted_without_in_flight_resumes_without_probe(cms, station, desfire_profile, order_for):
    order_for(desfire_profile)
    cms.report(station.report("card_presented", uid=DESFIRE_UID))
    first = cms.last_envelope()
    steps = first["script"]["steps"]
    file_1 = next(i for i, s in enumerate(steps) if s.get("label") == "app.F0A001.file.1.create")
    cms.result(station.result(first, state="interrupted", upto=file_1 + 1,
                              error={"step": file_1 + 1, "kind": "CardRemovedError", "message": "removed"}))
    assert not Card.objects.get(uid=DESFIRE_UID).probe_required
    cms.report(station.report("card_presented", uid=DESFIRE_UID))
    resumed = cms.last_envelope()["script"]["steps"]
    assert resumed[0] == {"op": "desfire.select_application", "aid": "F0A001"}
    assert resumed[1]["op"] == "desfire.authenticate" and resumed[1]["key"].startswith("kv-")
    assert resumed[2]["label"] == "app.F0A001.file.1.data"


def test_job_that_never_reported_is_expired_and_every_key_change_it_carried_is_probed(
        cms, station, desfire_profile, order_for):
    from datetime import timedelta

    from django.utils import timezone

    order_for(desfire_profile)
    cms.report(station.report("card_presented", uid=DESFIRE_UID))
    lost = cms.last_envelope()
    Job.objects.filter(pk=lost["job_id"]).update(created_at=timezone.now() - timedelta(hours=1))

    cms.report(station.report("card_presented", uid=DESFIRE_UID))
    expired = Job.objects.get(pk=lost["job_id"])
    assert expired.state == "failed" and expired.error["kind"] == "NoResult"
    assert AuditEvent.objects.filter(action="job.expired", job_id=lost["job_id"]).exists()
    probe = cms.last_envelope()
    # the lost job carried the application's and files' creates too: the probe lists applications first
    assert [s.get("label") for s in probe["script"]["steps"] if s.get("label")] == [
        "probe.aids", "probe.picc.0", "probe.app.F0A001.0", "probe.app.F0A001.1", "probe.app.F0A001.2"]
    listing = probe["script"]["steps"].index({"op": "desfire.get_application_ids", "label": "probe.aids"})
    # the lost job never got as far as the application: the card has the PICC key, not the application
    picc = probe["script"]["steps"].index({"op": "desfire.get_key_version", "key_no": 0,
                                           "label": "probe.picc.0"})
    select_app = picc + 1
    card = Card.objects.get(uid=DESFIRE_UID)
    number = _versions(card)["picc.0"].number
    outcome = cms.result(station.result(probe, state="failed", upto=select_app,
                                        statuses={select_app: "failed"},
                                        observed={picc: {"key_version": number}, listing: {"aids": []}},
                                        error={"step": select_app, "op": "desfire.select_application",
                                               "apdu": "905A000003", "sw": "91A0",
                                               "kind": "StatusWordError", "message": "no such application"}))
    assert outcome["quarantined"] is False
    assert _versions(card)["picc.0"].state == "active"
    # next presentation: the absent application is not probed again; the PICC was settled
    cms.report(station.report("card_presented", uid=DESFIRE_UID))
    follow = cms.last_envelope()
    card.refresh_from_db()
    assert not card.probe_required
    steps = follow["script"]["steps"]
    picc_ref = f"kv-{_versions(card)['picc.0'].pk}"
    assert steps[1] == {"op": "desfire.authenticate", "key_no": 0, "key": picc_ref, "key_type": "aes128"}
    assert steps[2]["label"] == "app.F0A001.create"
