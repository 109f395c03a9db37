"""The station's replay ledger: every job id it has accepted, so no job runs twice on this station.

Celery delivers at least once and a broker copy can be replayed; the CMS's state machine is one
guard, this SQLite file in the agent home is the station's own. A job id is claimed (one write
transaction, atomic across agent processes sharing the home) before the card is touched; a second
claim of the same id fails whatever the first one's outcome, because a job that died mid-card must
be probed by the CMS, not repeated.
"""
from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

LEDGER_FILE = "jobs.sqlite3"


class ReplayLedger:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10)
        self.path.chmod(0o600)  # job ids and card UIDs: the station's business only
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS jobs (job_id TEXT PRIMARY KEY, state TEXT NOT NULL, "
                         "card_uid TEXT, received_at REAL NOT NULL, finished_at REAL, expires_at INTEGER)")

    @classmethod
    def in_home(cls, home: str | Path) -> ReplayLedger:
        Path(home).mkdir(parents=True, exist_ok=True, mode=0o700)
        return cls(Path(home) / LEDGER_FILE)

    def claim(self, job_id: str, *, card_uid: str = "", expires_at: int | None = None,
              check: Callable[[], None] | None = None) -> bool:
        """True if this job id was never seen here (it is now recorded as running); False for a replay.

        Atomic across processes sharing the file: one write transaction (BEGIN IMMEDIATE: SQLite's
        RESERVED lock, so a second process's claim waits) looks the id up, runs `check` and inserts.
        A replay is answered before `check`; if `check` raises (an expired job), nothing is recorded
        and the exception goes to the caller.
        """
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                seen = self._db.execute("SELECT 1 FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
                if seen is None and check is not None:
                    check()
                if seen is None:
                    self._db.execute("INSERT INTO jobs (job_id, state, card_uid, received_at, expires_at) "
                                     "VALUES (?, 'running', ?, ?, ?)",
                                     (job_id, card_uid, time.time(), expires_at))
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return seen is None

    def finish(self, job_id: str, state: str) -> None:
        with self._lock:
            self._db.execute("UPDATE jobs SET state = ?, finished_at = ? WHERE job_id = ?",
                             (state, time.time(), job_id))

    def state(self, job_id: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT state FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return row[0] if row else None

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        return dict(rows)

    def recent(self, limit: int = 10) -> list[dict]:
        with self._lock:
            rows = self._db.execute("SELECT job_id, state, card_uid, received_at, finished_at FROM jobs "
                                    "ORDER BY received_at DESC LIMIT ?", (limit,)).fetchall()
        return [dict(zip(("job_id", "state", "card_uid", "received_at", "finished_at"), row, strict=True))
                for row in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()
