"""The agent's Celery side: JSON only, acks late, prefetch 1; results go to queue "cms" on real Redis."""
from __future__ import annotations

import uuid

import pytest

from readeragent import protocol
from readeragent.monitor import make_report
from readeragent.worker import RUN_JOB, Agent, make_app, register

from . import flows
from .conftest import BROKER, SHARES_CMS_QUEUE, VirtualTransport

pytestmark = SHARES_CMS_QUEUE


def test_app_is_json_only_acks_late_prefetch_one():
    app = make_app(BROKER)
    conf = app.conf
    assert conf.task_serializer == "json" and conf.accept_content == ["json"]
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1 and not conf.worker_enable_remote_control
    assert conf.result_backend is None


@pytest.fixture
def cms_queue():
    from tests.e2e.station import CmsQueue

    queue = CmsQueue(BROKER)
    yield queue
    queue.close()


def test_job_result_goes_to_the_cms_queue_signed(cms, identity, ledger, cms_queue):
    card = flows.make_desfire_card()
    agent = Agent(identity, ledger.path.parent, None, make_app(BROKER), ledger,
                  card_source=lambda: (VirtualTransport(card), flows.DESFIRE_UID, lambda: None))
    register(agent)
    assert RUN_JOB in agent.app.tasks
    envelope = cms.envelope(flows.desfire_steps(), flows.desfire_keys(), uid=flows.DESFIRE_UID,
                            job_id=str(uuid.uuid4()))
    agent.app.tasks[RUN_JOB].run(envelope)  # the task body, as the worker calls it

    result = cms_queue.next("cms.job_result", timeout=10)
    assert result["job_id"] == envelope["job_id"] and result["state"] == "succeeded"
    protocol.verify_signature(result, identity.sign_private_key.public_key(), "result")
    assert agent.jobs["succeeded"] == 1


def test_no_card_in_the_reader_refuses_the_job(cms, identity, ledger, cms_queue):
    agent = Agent(identity, ledger.path.parent, None, make_app(BROKER), ledger)
    envelope = cms.envelope(flows.desfire_steps(), flows.desfire_keys(), uid=flows.DESFIRE_UID)
    result = agent.handle_job(envelope)
    assert result["state"] == "refused" and result["error"]["reason"] == "card"
    assert cms_queue.next("cms.job_result", timeout=10)["job_id"] == envelope["job_id"]


def test_reports_are_signed_and_carry_what_jobproto_names(identity):
    report = make_report(identity, "card_presented", "Virtual PCD 00 00", uid="04A1", atr="3B80",
                         chip_type="desfire_ev2")
    assert {"v", "type", "station", "reader", "uid", "atr", "at", "nonce", "signature"} <= report.keys()
    protocol.verify_signature(report, identity.sign_private_key.public_key(), "report")
    beat = make_report(identity, "heartbeat", "Virtual PCD 00 00")
    assert "uid" not in beat and beat["nonce"] != report["nonce"]
    assert isinstance(beat["ips"], list) and "127.0.0.1" not in beat["ips"]


def test_a_fault_outside_the_steps_still_answers_the_cms_with_a_signed_failure(cms, identity, ledger,
                                                                               cms_queue):
    def broken_reader():
        raise OSError("reader unplugged")

    agent = Agent(identity, ledger.path.parent, None, make_app(BROKER), ledger, card_source=broken_reader)
    envelope = cms.envelope(flows.desfire_steps(), flows.desfire_keys(), uid=flows.DESFIRE_UID)
    result = agent.handle_job(envelope)
    assert result["state"] == "failed" and result["error"]["kind"] == "OSError"
    protocol.verify_signature(result, identity.sign_private_key.public_key(), "result")
    assert cms_queue.next("cms.job_result", timeout=10)["job_id"] == envelope["job_id"]
