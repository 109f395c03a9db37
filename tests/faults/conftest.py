"""Fault-injection fixtures: the e2e stack (runstack on its own private Redis) with short job timers, so a
job whose agent died is swept in seconds rather than minutes: CMS_JOB_TTL_SECONDS 5, the CMS task time
limit 6 s (the sweep waits expiry + time limit), the beat sweep every 2 s."""
from __future__ import annotations

import contextlib

import pytest

from tests.e2e import stack as stack_module
from tests.e2e.conftest import enrolled_station  # noqa: F401 - the fixture, on this folder's cms_stack
from tests.e2e.station import start_redis, stop
from tests.e2e.test_pipeline import SETUP

FAST = {"CMS_JOB_TTL_SECONDS": "5", "CELERY_TASK_TIME_LIMIT": "6", "CELERY_TASK_SOFT_TIME_LIMIT": "5",
        "CMS_JOB_SWEEP_SECONDS": "2"}


@contextlib.contextmanager
def fault_stack(tmp_path_factory, extra: dict[str, str] | None = None, broker: str | None = None,
                database_url: str | None = None):
    """The e2e stack with FAST timers plus `extra` (patched in only while the stack starts, never for other
    folders' stacks), on a private Redis unless `broker` is given, on SQLite unless `database_url`."""
    redis_process = None
    if broker is None:
        broker, redis_process = start_redis(tmp_path_factory.mktemp("redis"))
    try:
        patch = pytest.MonkeyPatch()
        base_env = stack_module._base_env
        patch.setattr(stack_module, "_base_env", lambda: {**base_env(), **FAST, **(extra or {})})
        try:
            stack = stack_module.start_stack(tmp_path_factory.mktemp("stack") / "instance", broker,
                                             database_url=database_url)
        finally:
            patch.undo()
        try:
            stack.data = stack.shell(SETUP)
            yield stack
        finally:
            stack_module.stop_stack(stack)
    finally:
        if redis_process is not None:
            stop(redis_process)


@pytest.fixture(scope="session")
def cms_stack(tmp_path_factory):
    """One stack for every test of the session that uses it (a module may override it with its own):
    each fault case orders its own fresh card and enrols its own station, so none sees another's state.
    The short timers are patched in only while the stack starts, never for other folders' stacks."""
    with fault_stack(tmp_path_factory) as stack:
        yield stack
