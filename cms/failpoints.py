"""Failpoints for the fault-injection tests (issue 6): named places where a test may have this process
SIGKILL itself, so that a crash at exactly that point can be proven harmless.

Off unless CMS_FAILPOINTS names points (comma-separated) and CMS_ENVIRONMENT is not "production". Both are
read once, at import: a disabled `hit()` is one look-up in an empty frozenset, nothing else.

An enabled point fires only while it is armed: `arm(name)` (the test) creates the file
`<CMS_FAILPOINTS_DIR>/<name>` (default `<CMS_INSTANCE_DIR>/failpoints`); the first process that reaches the
point removes that file (atomic: one kill per arming, whichever Celery pool process gets there) and
SIGKILLs itself. Nothing is flushed, no handler runs: as an OOM kill or a pulled plug.

Points (cards/services/jobs.py, cards/tasks.py):
- `result.verified`: a job result's station signature has been checked, nothing written yet;
- `result.applied`: the result has moved the job, card and key ledger and its audit events are appended,
  the transaction is not committed yet;
- `result.committed`: the result is committed, the Celery task has not returned (its message not acked).
"""
from __future__ import annotations

import os
import signal
from pathlib import Path

POINTS = frozenset({"result.verified", "result.applied", "result.committed"})


def _enabled(environ=os.environ) -> frozenset[str]:
    if environ.get("CMS_ENVIRONMENT", "development") == "production":
        return frozenset()
    names = {n.strip() for n in environ.get("CMS_FAILPOINTS", "").split(",") if n.strip()}
    return frozenset(names & POINTS)


def _directory(environ=os.environ) -> Path:
    explicit = environ.get("CMS_FAILPOINTS_DIR")
    if explicit:
        return Path(explicit)
    return Path(environ.get("CMS_INSTANCE_DIR", ".")) / "failpoints"


ENABLED = _enabled()


def hit(name: str) -> None:
    """SIGKILL this process if point `name` is enabled and armed (disarming it); otherwise nothing."""
    if name not in ENABLED:
        return
    try:
        (_directory() / name).unlink()
    except FileNotFoundError:
        return
    os.kill(os.getpid(), signal.SIGKILL)


def arm(name: str, directory: Path | None = None) -> Path:
    """Arm point `name` for one kill (used by tests, from outside the process that will die)."""
    if name not in POINTS:
        raise ValueError(f"unknown failpoint {name!r}; known: {sorted(POINTS)}")
    folder = directory or _directory()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.touch()
    return path
