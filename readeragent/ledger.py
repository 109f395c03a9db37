"""The station's replay ledger: every job id it has accepted, so no job runs twice on this station.

Celery delivers at least once and a broker copy can be replayed; the CMS's state machine is one
guard, this SQLite file in the agent home is the station's own. A job id is claimed (one write
transaction, atomic across agent processes sharing the home) before the card is touched; a second
claim of the same id fails whatever the first one's outcome, because a job that died mid-card must
be probed by the CMS, not repeated.

The same file holds the result outbox: every signed result is written here before it is published
and marked sent once the broker took it. A result the broker could not take (Redis down) is sent
again until it goes; one it took may still be lost with the broker (Redis restarted without
persistence while the result waited for the CMS), so results stay "recent" for a window after they
were made and are sent again when the agent reconnects to the broker. The CMS applies a result once
and refuses any later copy as a replay. Results are signed documents without keys (redacted traces).
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

LEDGER_FILE = "jobs.sqlite3"
RESEND_WINDOW_S = 300.0  # longer than a job's expiry plus the CMS's task time limit (30 + 120 s)


class ReplayLedger:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10)
        self.path.chmod(0o600)  # job ids and card UIDs: the station's business only
        self._wal()
        self._db.execute("CREATE TABLE IF NOT EXISTS jobs (job_id TEXT PRIMARY KEY, state TEXT NOT NULL, "
                         "card_uid TEXT, received_at REAL NOT NULL, finished_at REAL, expires_at INTEGER)")
        self._db.execute("CREATE TABLE IF NOT EXISTS outbox (job_id TEXT PRIMARY KEY, "
                         "document TEXT NOT NULL, made_at REAL NOT NULL, resend_until REAL NOT NULL, "
                         "sent_at REAL, attempts INTEGER NOT NULL DEFAULT 0)")

    def _wal(self) -> None:
        """WAL mode (kept in the file). Switching takes an exclusive lock that SQLite's busy timeout does
        not wait for: two agent processes starting on one home at once failed with "database is locked"
        (tests/faults/test_double_delivery.py), so the switch is tried again, and skipped once done."""
        for attempt in range(100):
            try:
                if self._db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    self._db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError:
                if attempt == 99:
                    raise
                time.sleep(0.05)

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

    # --- the result outbox ---------------------------------------------------------------------------

    def outbox_put(self, job_id: str, document: dict, *, now: float | None = None,
                   window_s: float = RESEND_WINDOW_S) -> None:
        """Keep a signed result before it is published (replaces an earlier one of the same job)."""
        now = time.time() if now is None else now
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO outbox (job_id, document, made_at, resend_until) "
                             "VALUES (?, ?, ?, ?)", (job_id, json.dumps(document), now, now + window_s))

    def outbox_sent(self, job_id: str, *, now: float | None = None) -> None:
        with self._lock:
            self._db.execute("UPDATE outbox SET sent_at = ?, attempts = attempts + 1 WHERE job_id = ?",
                             (time.time() if now is None else now, job_id))

    def outbox_failed(self, job_id: str) -> None:
        with self._lock:
            self._db.execute("UPDATE outbox SET attempts = attempts + 1 WHERE job_id = ?", (job_id,))

    def outbox_unsent(self) -> list[dict]:
        """Results the broker never took, oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT document FROM outbox WHERE sent_at IS NULL "
                                    "ORDER BY made_at").fetchall()
        return [json.loads(row[0]) for row in rows]

    def outbox_recent(self, *, now: float | None = None) -> list[dict]:
        """Results still inside their resend window (sent or not), oldest first; sent ones past their
        window leave the outbox."""
        now = time.time() if now is None else now
        with self._lock:
            self._db.execute("DELETE FROM outbox WHERE sent_at IS NOT NULL AND resend_until < ?", (now,))
            rows = self._db.execute("SELECT document FROM outbox WHERE resend_until >= ? ORDER BY made_at",
                                    (now,)).fetchall()
        return [json.loads(row[0]) for row in rows]

    def outbox_counts(self) -> dict[str, int]:
        with self._lock:
            unsent, kept = self._db.execute("SELECT COUNT(*) - COUNT(sent_at), COUNT(*) "
                                            "FROM outbox").fetchone()
        return {"unsent": unsent or 0, "kept": kept or 0}

    def close(self) -> None:
        with self._lock:
            self._db.close()
