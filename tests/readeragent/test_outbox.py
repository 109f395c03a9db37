"""The agent's result outbox (readeragent.ledger / worker): a result the broker could not take is kept and
sent once it can; after a reconnect the recent results are sent again (a broker restarted without
persistence lost what it held); refusals are never sent twice. Real Redis (and a port nobody listens on).
"""
from __future__ import annotations

import uuid

import pytest

from readeragent.worker import Agent, make_app

from .conftest import BROKER, SHARES_CMS_QUEUE

pytestmark = SHARES_CMS_QUEUE
DEAD = "redis://127.0.0.1:1/0"


@pytest.fixture
def cms_queue():
    from tests.e2e.station import CmsQueue

    queue = CmsQueue(BROKER)
    yield queue
    queue.close()


def _result(state="succeeded"):
    return {"v": 1, "job_id": str(uuid.uuid4()), "station": "s1", "state": state, "steps": []}


def _received(queue, n, timeout=5.0):
    return [queue.next("cms.job_result", timeout=timeout)["job_id"] for _ in range(n)]


def test_a_result_the_broker_did_not_take_is_kept_and_sent_later(identity, ledger, cms_queue):
    agent = Agent(identity, ledger.path.parent, None, make_app(DEAD), ledger)
    first, second = _result(), _result("failed")
    assert agent.deliver_result(first) is False and agent.deliver_result(second) is False
    assert ledger.outbox_counts() == {"unsent": 2, "kept": 2}
    assert agent.flush_outbox() == 0  # still down: nothing lost, nothing marked sent

    agent.app = make_app(BROKER)  # the broker is back
    assert agent.flush_outbox() == 2
    assert _received(cms_queue, 2) == [first["job_id"], second["job_id"]]  # oldest first
    assert ledger.outbox_counts() == {"unsent": 0, "kept": 2}
    assert agent.flush_outbox() == 0  # sent ones are not sent again by a plain flush


def test_a_reconnect_resends_recent_results_but_not_refusals(identity, ledger, cms_queue):
    agent = Agent(identity, ledger.path.parent, None, make_app(BROKER), ledger)
    ran, refused = _result(), _result("refused")
    assert agent.deliver_result(ran) and agent.deliver_result(refused)
    assert _received(cms_queue, 2) == [ran["job_id"], refused["job_id"]]

    agent.on_broker_connected()  # the first connection: only what is unsent (nothing)
    with pytest.raises(TimeoutError):
        cms_queue.next("cms.job_result", timeout=1)
    agent.on_broker_connected()  # a reconnect: the result of the job that ran goes again
    assert _received(cms_queue, 1) == [ran["job_id"]]
    with pytest.raises(TimeoutError):
        cms_queue.next("cms.job_result", timeout=1)


def test_sent_results_leave_the_outbox_after_their_window(ledger):
    ledger.outbox_put("a", {"job_id": "a"}, now=1000.0, window_s=300)
    ledger.outbox_put("b", {"job_id": "b"}, now=1000.0, window_s=300)
    ledger.outbox_sent("a", now=1001.0)
    assert [d["job_id"] for d in ledger.outbox_recent(now=1200.0)] == ["a", "b"]
    # past the window: the sent one is dropped, the unsent one is kept (sent when the broker takes it)
    assert ledger.outbox_recent(now=1400.0) == []
    assert [d["job_id"] for d in ledger.outbox_unsent()] == ["b"]
    assert ledger.outbox_counts() == {"unsent": 1, "kept": 1}


def test_a_failed_publish_then_a_good_one_makes_the_consumer_reconnect(identity, ledger, cms_queue):
    """What BrokerWatch checks in the consumer's loop: the broker went away and came back (seen by the
    publishes, the monitor's included); a new connection of the consumer clears it."""
    agent = Agent(identity, ledger.path.parent, None, make_app(DEAD), ledger)
    assert not agent.broker_came_back()
    with pytest.raises(Exception):  # noqa: B017, PT011 - kombu's OperationalError
        agent.send("cms.station_report", {"v": 1})
    assert agent.broker_failed_at and not agent.broker_came_back()  # still away
    agent.app = make_app(BROKER)
    agent.send("cms.station_report", {"v": 1})
    assert agent.broker_came_back()
    agent.on_broker_connected()
    assert not agent.broker_came_back() and agent.broker_connections == 1
