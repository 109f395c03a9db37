"""cms/failpoints.py (off in production and unless named, one kill per arming) and the CMS tasks' guard
against a message that kills its worker on every delivery (cards/tasks.py, counted in real Redis)."""
from __future__ import annotations

import subprocess
import sys
import uuid
from types import SimpleNamespace

import pytest

from cms import failpoints
from tests.e2e.stack import ROOT


def test_points_are_enabled_only_by_name_and_never_in_production():
    assert failpoints._enabled({}) == frozenset()
    assert failpoints._enabled({"CMS_FAILPOINTS": "result.applied, nonsense"}) == {"result.applied"}
    assert failpoints._enabled({"CMS_FAILPOINTS": "result.applied", "CMS_ENVIRONMENT": "production"}) \
        == frozenset()
    with pytest.raises(ValueError, match="unknown failpoint"):
        failpoints.arm("nonsense")


def test_an_armed_point_kills_its_process_once(tmp_path):
    code = ("from cms import failpoints\nfailpoints.hit('result.verified')\nprint('survived', flush=True)\n")
    env = {"PATH": "/usr/bin:/bin", "CMS_FAILPOINTS": "result.verified", "CMS_FAILPOINTS_DIR": str(tmp_path)}

    def run(extra=None):
        return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**env, **(extra or {})},
                              capture_output=True, text=True, timeout=30)

    assert run().stdout == "survived\n"  # enabled, not armed
    armed = failpoints.arm("result.verified", tmp_path)
    assert run({"CMS_ENVIRONMENT": "production"}).stdout == "survived\n" and armed.exists()
    killed = run()
    assert killed.returncode == -9 and killed.stdout == "" and not armed.exists()
    assert run().stdout == "survived\n"  # disarmed by the kill


@pytest.fixture
def redis_broker(settings):
    import redis

    url = "redis://127.0.0.1:6379/13"
    try:
        redis.Redis.from_url(url).ping()
    except redis.ConnectionError:
        pytest.skip("no Redis on 127.0.0.1:6379")
    from cards import tasks

    settings.CELERY_BROKER_URL = url
    settings.CMS_JOB_MAX_DELIVERIES = 3
    tasks._redis_client = None
    yield url
    tasks._redis_client = None


def _task(task_id, retries=0, eager=False):
    return SimpleNamespace(name="cms.job_result",
                           request=SimpleNamespace(id=task_id, retries=retries, is_eager=eager))


def test_a_message_that_killed_its_worker_too_often_is_dropped(redis_broker):
    from cards import tasks

    task_id = str(uuid.uuid4())
    result = {"job_id": "j" * 36, "station": "s1"}
    assert [tasks._dropped(_task(task_id), result) for _ in range(3)] == [None, None, None]
    assert tasks._dropped(_task(task_id), result) == {"status": "dropped", "reason": "poison",
                                                      "deliveries": 4}
    # a retry (autoretry on a transient error) is a new message with the same task id: counted anew
    assert tasks._dropped(_task(task_id, retries=1), result) is None
    # run eagerly or directly: never counted
    assert all(tasks.deliveries(_task(task_id, eager=True)) == 1 for _ in range(5))
    assert tasks.deliveries(_task(None)) == 1


def test_an_unreachable_counter_lets_the_work_run(settings):
    from cards import tasks

    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"
    tasks._redis_client = None
    try:
        assert tasks._dropped(_task(str(uuid.uuid4())), {}) is None
    finally:
        tasks._redis_client = None
