"""A JCOP 4 card (seed 002): transport keys -> PUT KEY of KDF3-diversified ISD keys -> STORE DATA -> lock."""
from __future__ import annotations

import pytest

from cardproto import kdf
from cards.models import Card, Job
from keys import keystore
from keys.kcv import kcv
from keys.models import KeyVersion
from readeragent import protocol

from .conftest import GP_TEST_KEY, JCOP_UID

pytestmark = [pytest.mark.vault, pytest.mark.django_db]


def test_jcop_card_gets_diversified_isd_keys_confirmed_by_put_key(cms, station, jcop_profile, masters,
                                                                   order_for):
    order = order_for(jcop_profile, uids=[JCOP_UID])
    assert cms.report(station.report("card_presented", uid=JCOP_UID, atr="3B8A80014A434F503400"))["status"] \
        == "dispatched"
    envelope = cms.last_envelope()
    assert envelope["card"] == {"uid": JCOP_UID, "chip_type": "jcop4"}
    steps = envelope["script"]["steps"]
    assert [s["op"] for s in steps] == ["select", "gp.open_scp03", "gp.put_key", "select", "gp.open_scp03",
                                        "gp.store_data", "gp.set_status", "gp.lock_card"]
    put_key = steps[2]
    card = Card.objects.get(uid=JCOP_UID)
    versions = {v.pk: v for v in KeyVersion.objects.filter(slot__card=card).select_related("slot")}
    assert put_key["confirms"] == {"key_versions": sorted(versions)}
    isd_master = masters["isd-master"]
    keys = station.open(envelope)
    try:
        transport = steps[1]["keys"]
        assert {keys[transport[name]] == GP_TEST_KEY for name in ("enc", "mac", "dek")} == {True}
        with keystore.unwrap(card.tenant_id, [keystore.BlobRef.parse(isd_master.vault_ref)]) as plain:
            master = plain[keystore.BlobRef.parse(isd_master.vault_ref)]
            for name, label in (("enc", kdf.ENC), ("mac", kdf.MAC), ("dek", kdf.DEK)):
                expected = kdf.kdf3_jcop(master, label, bytes.fromhex(JCOP_UID))
                assert keys[put_key["keys"][name]] == expected
        for version in versions.values():
            assert version.kcv == kcv(keys[f"kv-{version.pk}"], "gp")  # GP KCV, filled in at unwrap
    finally:
        protocol.wipe_keys(keys)

    outcome = cms.result(station.result(envelope, observed={2: {"kcv_match": True}}))
    assert outcome["state"] == "succeeded"
    assert {v.state for v in KeyVersion.objects.filter(slot__card=card)} == {"active"}
    card.refresh_from_db()
    order.refresh_from_db()
    assert card.state == "active" and order.state == "completed"
    job = Job.objects.get(pk=envelope["job_id"])
    assert job.stage_reached == "gp.lock_card"
    # a second presentation of a finished card sends nothing
    assert cms.report(station.report("card_presented", uid=JCOP_UID))["status"] == "nothing_to_do"


def test_put_key_in_flight_is_probed_with_key_information(cms, station, jcop_profile, order_for):
    order_for(jcop_profile, uids=[JCOP_UID])
    cms.report(station.report("card_presented", uid=JCOP_UID))
    first = cms.last_envelope()
    cms.result(station.result(first, state="interrupted", upto=2, statuses={2: "in_flight"},
                              error={"step": 2, "kind": "CardRemovedError", "message": "removed"}))
    cms.report(station.report("card_presented", uid=JCOP_UID))
    probe = cms.last_envelope()
    assert probe["script"]["steps"] == [
        {"op": "select", "aid": "A000000151000000"},
        {"op": "gp.key_information", "expect_kvn": 0x31, "label": "probe.isd"}]
    outcome = cms.result(station.result(probe, observed={1: {"kvns": [0x31]}}))
    card = Card.objects.get(uid=JCOP_UID)
    assert {v.state for v in KeyVersion.objects.filter(slot__card=card)} == {"active"}
    resumed = cms.last_envelope()
    assert resumed["job_id"] == outcome["next_job"]
    ops = [s["op"] for s in resumed["script"]["steps"]]
    assert "gp.put_key" not in ops and ops[:2] == ["select", "gp.open_scp03"]
    assert resumed["script"]["steps"][1]["kvn"] == 0x31


def test_put_key_whose_kcv_differs_quarantines_the_card(cms, station, jcop_profile, order_for):
    order_for(jcop_profile, uids=[JCOP_UID])
    cms.report(station.report("card_presented", uid=JCOP_UID))
    envelope = cms.last_envelope()
    error = {"step": 2, "op": "gp.put_key", "apdu": "84D8003181", "sw": None, "kind": "KcvMismatchError",
             "message": "PUT KEY: the card's key check values differ from ours", "authentication": False}
    outcome = cms.result(station.result(envelope, state="failed", upto=2, statuses={2: "in_flight"},
                                        error=error))
    assert outcome["quarantined"] is True and outcome["probe_required"] is True
    card = Card.objects.get(uid=JCOP_UID)
    assert card.state == "quarantined"
    assert {v.state for v in KeyVersion.objects.filter(slot__card=card)} == {"pending"}
    assert cms.report(station.report("card_presented", uid=JCOP_UID))["reason"] == "card_state"
