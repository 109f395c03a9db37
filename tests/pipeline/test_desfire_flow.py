"""A DESFire card (seed 003) from presentation to an active ledger, through the CMS tasks and real OpenBao."""
from __future__ import annotations

import pytest

from audit.models import AuditEvent
from cards.models import Card, Job
from keys.kcv import kcv
from keys.models import KeyVersion

from .conftest import DESFIRE_UID

pytestmark = [pytest.mark.vault, pytest.mark.django_db]


def test_presented_desfire_card_gets_a_sealed_signed_job_and_its_result_activates_the_keys(
        cms, station, desfire_profile, order_for, sent):
    order = order_for(desfire_profile)
    answer = cms.report(station.report("card_presented", uid=DESFIRE_UID))
    assert answer["status"] == "dispatched"
    queue, envelope = sent[-1]
    assert queue == f"station.{station.code}"
    keys = station.open(envelope)
    try:
        card = Card.objects.get(uid=DESFIRE_UID)
        pending = {v.pk: v for v in KeyVersion.objects.filter(slot__card=card)}
        assert len(pending) == 4 and {v.state for v in pending.values()} == {"pending"}
        # every key the script changes to is the one the ledger recorded (by its KCV)
        for step in envelope["script"]["steps"]:
            if step["op"] == "desfire.change_key":
                version = pending[step["confirms"]["key_version"]]
                assert kcv(keys[step["new_key"]], "desfire") == version.kcv
                assert step["new_version"] == version.number
        assert keys["default-2k3des"] == bytearray(16)
    finally:
        protocol_wipe(keys)
    outcome = cms.result(station.result(envelope))
    assert outcome["state"] == "succeeded"
    card.refresh_from_db()
    assert card.state == "active"
    assert {v.state for v in KeyVersion.objects.filter(slot__card=card)} == {"active"}
    order.refresh_from_db()
    assert (order.cards_done, order.state) == (1, "completed")
    job = Job.objects.get(pk=envelope["job_id"])
    assert job.state == "succeeded" and job.steps_done == len(envelope["script"]["steps"])
    actions = set(AuditEvent.objects.filter(job_id=str(job.id)).values_list("action", flat=True))
    assert {"job.created", "keys.unwrapped", "card.authenticated", "card.key_changed", "card.file_written",
            "job.finished"} <= actions
    # each ChangeKey's event records the activation it caused, in the same transaction
    changed = AuditEvent.objects.filter(job_id=str(job.id), action="card.key_changed")
    assert sorted(e.details["activated"][0]["key_version"] for e in changed) == [1, 1, 1, 1]
    assert all(e.details["activated"][0]["kcv"] for e in changed)


def protocol_wipe(keys):
    from readeragent import protocol

    protocol.wipe_keys(keys)
