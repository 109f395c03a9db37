"""Beat's periodic tasks while a backing service is away.

A sweep or rule run that finds Vault sealed or unreachable, the audit chain key unreadable, or the database
gone does nothing and says so in one warning line (`task.deferred`, naming the task and the error class):
beat runs it again at its next period, so a retry of its own would only pile up copies, and a worker
traceback every few seconds during an outage would bury the one line an operator needs.
"""
from __future__ import annotations

import functools

import structlog
from django.db import InterfaceError, OperationalError

from audit.errors import AuditUnavailable
from cms.errors import KeystoreUnavailable

log = structlog.get_logger(__name__)
AWAY = (KeystoreUnavailable, AuditUnavailable, OperationalError, InterfaceError)


def deferred_while_away(name: str):
    """Decorate a beat task's function (under @shared_task): a backing service away is a deferred run."""
    def decorate(function):
        @functools.wraps(function)
        def run(*args, **kwargs):
            try:
                return function(*args, **kwargs)
            except AWAY as exc:
                log.warning("task.deferred", task=name, error=type(exc).__name__,
                            reason="a backing service is away; beat runs the task again at its next period")
                return {"deferred": type(exc).__name__}
        return run
    return decorate
