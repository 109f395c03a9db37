"""Through the real broker (Redis): the job reaches exactly the station's queue; the dry-run and jobs API."""
from __future__ import annotations

import json

import pytest
from rest_framework.test import APIClient

from cards.models import Job

from .conftest import DESFIRE_UID

pytestmark = [pytest.mark.vault, pytest.mark.django_db]


def _take(queue: str, timeout: float = 5.0):
    from cms.celery import app

    with app.connection_for_read() as connection:
        simple = connection.SimpleQueue(queue)
        try:
            message = simple.get(timeout=timeout)
            message.ack()
            return message
        finally:
            simple.close()


def test_job_goes_to_the_station_queue_through_redis_as_json(station, desfire_profile, order_for,
                                                             django_capture_on_commit_callbacks):
    from cards import tasks

    order_for(desfire_profile)
    with django_capture_on_commit_callbacks(execute=True):
        answer = tasks.station_report.run(station.report("card_presented", uid=DESFIRE_UID))
    message = _take(f"station.{station.code}")
    assert message.headers["task"] == "station.run_job"
    assert message.content_type == "application/json"
    args, kwargs, _ = json.loads(message.body)
    envelope = args[0]
    assert envelope["job_id"] == answer["job"] and kwargs == {}
    # the headers (and so the worker's log lines) name the job, not a repr of the envelope and its sealed keys
    assert message.headers["argsrepr"] == f"[job {answer['job']}]"
    assert envelope["sealed_keys"] not in json.dumps(message.headers)
    keys = station.open(envelope)  # what crossed the broker verifies and opens at the station only
    assert keys


@pytest.fixture
def owner(acme):
    from django.contrib.auth import get_user_model

    from cms.models import Membership

    user = get_user_model().objects.create_user(username="alice", password=None)
    Membership.objects.create(user=user, tenant=acme, role="admin")
    return user


@pytest.fixture
def outsider(globex):
    from django.contrib.auth import get_user_model

    from cms.models import Membership

    user = get_user_model().objects.create_user(username="bob", password=None)
    Membership.objects.create(user=user, tenant=globex, role="admin")
    return user


def test_plan_dry_run_names_refs_and_never_keys(owner, outsider, desfire_profile, vault_calls):
    client = APIClient()
    client.force_login(owner)
    url = f"/api/v1/profiles/{desfire_profile.pk}/plan/"
    response = client.post(url, {"uid": DESFIRE_UID, "chip_type": "desfire_ev2"}, format="json")
    assert response.status_code == 200, response.content
    plan = response.json()
    assert plan["needs_versions"] == ["picc.0", "app.F0A001.1", "app.F0A001.2", "app.F0A001.0"]
    assert plan["script"]["steps"][1] == {"op": "desfire.authenticate", "key_no": 0, "key": "default-2k3des",
                                          "key_type": "2k3des"}
    assert not [c for c in vault_calls if "/decrypt/" in c[1] or "/encrypt/" in c[1]]  # no Vault, no key
    assert client.post(url, {"uid": DESFIRE_UID}, format="json").json() == \
        {"chip_type": ["this field is required with a uid"]}
    assert "chip_type" in client.post(url, {"uid": DESFIRE_UID, "chip_type": "jcop4"}, format="json").json()
    assert client.post(url, {}, format="json").status_code == 400
    other = APIClient()
    other.force_login(outsider)
    assert other.post(url, {"uid": DESFIRE_UID, "chip_type": "desfire_ev2"}, format="json").status_code == 404
    assert APIClient().post(url, {"uid": DESFIRE_UID, "chip_type": "desfire_ev2"},
                            format="json").status_code in (401, 403)


def test_plan_dry_run_of_a_provisioned_card_follows_its_ledger(cms, station, owner, desfire_profile,
                                                               order_for):
    order_for(desfire_profile)
    cms.report(station.report("card_presented", uid=DESFIRE_UID))
    envelope = cms.last_envelope()
    cms.result(station.result(envelope))
    client = APIClient()
    client.force_login(owner)
    job = Job.objects.get(pk=envelope["job_id"])
    response = client.post(f"/api/v1/profiles/{desfire_profile.pk}/plan/", {"card": job.card_id},
                           format="json")
    assert response.status_code == 200
    assert response.json()["script"]["steps"] == [] and response.json()["holds"]["picc.0"].startswith("kv-")


def test_job_detail_shows_the_redacted_trace_and_the_error_meaning(cms, station, owner, outsider,
                                                                   desfire_profile, order_for):
    order_for(desfire_profile)
    cms.report(station.report("card_presented", uid=DESFIRE_UID))
    envelope = cms.last_envelope()
    result = station.result(envelope, state="failed", upto=3, statuses={3: "failed"},
                            error={"step": 3, "op": "desfire.authenticate", "apdu": "90AA000001",
                                   "sw": "91AE", "kind": "AuthenticationRejectedError", "message": "x"},
                            trace=[{"step": 2, "direction": "TX", "apdu_hex": "90C4000019" + "AB" * 25,
                                    "redacted": False}])
    cms.result(result)
    client = APIClient()
    client.force_login(owner)
    detail = client.get(f"/api/v1/jobs/{envelope['job_id']}/").json()
    assert detail["state"] == "failed" and detail["error"]["meaning"].startswith("DESFire")
    # an unredacted ChangeKey command is cut to its header before it is stored
    assert detail["trace"] == [{"step": 2, "direction": "TX", "apdu_hex": "90C4000019", "redacted": True}]
    listed = client.get("/api/v1/jobs/").json()
    assert [j["id"] for j in listed["results"]] == [envelope["job_id"]]
    other = APIClient()
    other.force_login(outsider)
    assert other.get(f"/api/v1/jobs/{envelope['job_id']}/").status_code == 404
