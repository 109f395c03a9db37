"""The job after a probe needs Vault; a probe result that arrives while Vault is sealed is recorded and its
follow-up made by `cms.job_follow_up` once Vault is back (issue 6, found by
tests/faults/test_vault_seal.py). Before: the KeystoreUnavailable of the follow-up escaped after the
probe's result was committed, the result task was retried and refused as a replay, and the follow-up was
lost until the card was presented again."""
from __future__ import annotations

import pytest

from cards import tasks
from cards.models import Card, Job
from cards.services import jobs
from cms.errors import KeystoreUnavailable
from keys.models import KeyVersion

from .conftest import DESFIRE_UID

pytestmark = [pytest.mark.vault, pytest.mark.django_db]


@pytest.fixture
def deferred(monkeypatch):
    out: list[str] = []
    monkeypatch.setattr(jobs, "defer_follow_up", out.append)
    return out


def test_a_probe_result_while_vault_is_sealed_defers_its_follow_up_until_vault_is_back(
        cms, station, desfire_profile, order_for, sent, vault, deferred, django_capture_on_commit_callbacks):
    order_for(desfire_profile)
    cms.report(station.report("card_presented", uid=DESFIRE_UID))
    first = cms.last_envelope()
    steps = first["script"]["steps"]
    change_1 = next(i for i, s in enumerate(steps) if s.get("label") == "app.F0A001.1.change")
    cms.result(station.result(first, state="interrupted", upto=change_1, statuses={change_1: "in_flight"},
                              error={"step": change_1, "op": "desfire.change_key", "kind": "CardRemovedError",
                                     "message": "card left the field"}))
    cms.report(station.report("card_presented", uid=DESFIRE_UID))
    probe = cms.last_envelope()
    card = Card.objects.get(uid=DESFIRE_UID)
    pending = KeyVersion.objects.get(slot__card=card, slot__key_no=1, slot__application__aid="F0A001",
                                     state="pending")
    vault.seal()
    try:
        # the card took the new key: the probe settles it, the rest of the job still needs Vault
        outcome = cms.result(station.result(probe, observed={1: {"key_version": pending.number}}))
        assert outcome["state"] == "succeeded" and outcome["next_job"] == "deferred", outcome
        assert deferred == [probe["job_id"]]
        assert len(sent) == 2  # the first job and the probe: nothing more while Vault is sealed
        with pytest.raises(KeystoreUnavailable):  # the task retries on it (TRANSIENT)
            tasks.job_follow_up.run(probe["job_id"])
        assert Job.objects.filter(card=card).count() == 2  # nothing half-written
    finally:
        vault.unseal()
    with django_capture_on_commit_callbacks(execute=True):  # the dispatch, as the worker commits
        made = tasks.job_follow_up.run(probe["job_id"])["next_job"]
    assert made and len(sent) == 3 and sent[-1][1]["job_id"] == made
    assert Job.objects.get(pk=made).resumes_id == Job.objects.get(pk=probe["job_id"]).pk
    # a second delivery of the task (or of the probe's result) makes no second job
    with django_capture_on_commit_callbacks(execute=True):
        assert tasks.job_follow_up.run(probe["job_id"])["next_job"] == made
    assert len(sent) == 3



def test_a_card_presented_while_vault_is_sealed_is_refused_in_the_audit_trail_on_the_last_try(
        cms, station, desfire_profile, order_for, sent, vault):
    from audit.chainkey import chain_key
    from audit.models import AuditEvent

    order_for(desfire_profile)
    chain_key()  # this process has written events before (a worker that ran any task has)
    report = station.report("card_presented", uid=DESFIRE_UID)
    vault.seal()
    try:
        with pytest.raises(KeystoreUnavailable):  # a try before the last: retried by autoretry_for
            tasks.station_report.run(report)
        outcome = tasks.station_report.apply(args=[report], retries=tasks.station_report.max_retries).get()
        heartbeat = tasks.station_report.apply(args=[station.report("heartbeat")],
                                               retries=tasks.station_report.max_retries).get()
    finally:
        vault.unseal()
    assert outcome == {"status": "refused", "reason": "unavailable"}
    assert heartbeat["status"] in ("ok", "dropped")  # a heartbeat needs no Vault
    event = AuditEvent.objects.get(action="card.presentation_refused", card_uid=DESFIRE_UID)
    assert event.details["reason"] == "unavailable" and "sealed" in event.details["message"]
    assert not Card.objects.filter(uid=DESFIRE_UID).exists() and not sent  # nothing half-written
    assert cms.report(station.report("card_presented", uid=DESFIRE_UID))["status"] == "dispatched"
