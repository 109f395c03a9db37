"""The agent as a station runs it: `python -m readeragent run` on a real pcscd reader with a vpcd virtual
DESFire card, jobs and reports over real Redis. The CMS side is played here with readeragent.protocol
(sign, seal) and the queue it consumes; tests/e2e/test_pipeline*.py run the real CMS worker instead.
"""
from __future__ import annotations

import time
import uuid

import pytest

from cardsim.desfire import DESFireCard
from readeragent import protocol
from readeragent.worker import make_app
from tests.readeragent import flows
from tests.readeragent.conftest import Cms

from .station import CmsQueue, agent_process, start_redis, stop, wait_started

pytestmark = [pytest.mark.pcsc, pytest.mark.xdist_group("pcsc")]


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    url, process = start_redis(tmp_path_factory.mktemp("redis"))
    yield url
    stop(process)


@pytest.fixture
def station(tmp_path, pcsc_card, broker):
    from readeragent.identity import Identity

    code = f"e2e-{uuid.uuid4().hex[:8]}"
    identity = Identity.generate(code, "http://cms.invalid")
    cms = Cms(identity)
    home = tmp_path / "agent"
    identity.save(home)
    card = DESFireCard("ev2", uid=bytes.fromhex(flows.DESFIRE_UID), picc_key_type="des")
    reader = pcsc_card(card, connect=False)
    queue = CmsQueue(broker)
    process = agent_process(home, reader.reader, broker)
    app = make_app(broker)
    try:
        wait_started(process, home / "agent.log")
        yield identity, cms, card, reader, queue, app, home
    finally:
        stop(process)
        queue.close()
        print((home / "agent.log").read_text()[-4000:])


def _send(app, identity, envelope):
    app.send_task("station.run_job", args=[envelope], queue=identity.queue)


def test_agent_reports_the_card_runs_the_job_once_and_refuses_the_redelivery(station):
    identity, cms, card, reader, queue, app, home = station
    public = identity.sign_private_key.public_key()

    presented = queue.next("cms.station_report", where=lambda r: r["type"] == "card_presented")
    protocol.verify_signature(presented, public, "report")
    assert presented["uid"] == flows.DESFIRE_UID
    assert presented["atr"] == card.atr.hex().upper()
    assert presented["reader"] == reader.reader and presented["station"] == identity.station
    assert presented["chip_type"] == "desfire_ev2"

    keys = flows.desfire_keys()
    envelope = cms.envelope(flows.desfire_steps(), keys, uid=flows.DESFIRE_UID)
    _send(app, identity, envelope)
    result = queue.next("cms.job_result")
    protocol.verify_signature(result, public, "result")
    assert result["job_id"] == envelope["job_id"]
    assert result["state"] == "succeeded", result["error"]
    assert card.keys_held()[flows.APP_AID.lower()][1]["version"] == 1
    change_keys = card.ins_counts[0xC4]

    _send(app, identity, envelope)  # Celery delivers at least once: the same job again
    again = queue.next("cms.job_result")
    assert again["state"] == "refused" and again["error"]["reason"] == "replay"
    assert card.ins_counts[0xC4] == change_keys

    reader.bridge.remove()
    removed = queue.next("cms.station_report", where=lambda r: r["type"] == "card_removed")
    protocol.verify_signature(removed, public, "report")


def test_card_pulled_during_change_key_is_in_flight_through_pcscd(station):
    identity, cms, card, reader, queue, app, home = station
    queue.next("cms.station_report", where=lambda r: r["type"] == "card_presented")
    # The agent reads the UID (1 APDU), then steps 0..1 send 1 + 2 APDUs; ChangeKey is the next.
    card.faults.remove_after_executing = card.apdu_count + 1 + 3
    envelope = cms.envelope(flows.desfire_steps(), flows.desfire_keys(), uid=flows.DESFIRE_UID)
    _send(app, identity, envelope)
    result = queue.next("cms.job_result")
    assert result["state"] == "interrupted", result
    assert result["steps_done"] == 2
    assert result["steps"][-1]["op"] == "desfire.change_key"
    assert result["steps"][-1]["status"] == "in_flight"
    assert result["error"]["kind"] == "CardRemovedError"
    queue.next("cms.station_report", where=lambda r: r["type"] == "card_removed")
    assert card.keys_held()["000000"][0]["version"] == 1  # the card did change it: only a probe can tell


def test_heartbeats_are_signed(station):
    identity, *_ = station
    queue = station[4]
    beat = queue.next("cms.station_report", where=lambda r: r["type"] == "heartbeat")
    protocol.verify_signature(beat, identity.sign_private_key.public_key(), "report")
    assert beat["station"] == identity.station and len(beat["nonce"]) == 24
    assert abs(beat["at"] - time.time()) < 30
