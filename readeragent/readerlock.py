"""The card in a reader belongs to one job or one UID read at a time, across every agent process.

`readeragent run` started twice for the same station (same home, same reader), or a second agent on
the same reader, would otherwise interleave APDUs on one card: pyscard connects SCARD_SHARE_SHARED, and
another process's GetVersion inside a DESFire EV2 session breaks its command counter and MAC chain, and
a refused copy's connection closing with SCARD_RESET_CARD would end the other job's secure session.
An flock on a file in the agent home, named after the reader, plus a thread lock for this process's
monitor and job runner. The kernel drops an flock when its process dies (a SIGKILLed agent leaves none).
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import threading
from pathlib import Path


class ReaderLock:
    def __init__(self, home: str | Path, reader: str | None) -> None:
        digest = hashlib.sha256(str(reader).encode()).hexdigest()[:16]
        self.path = Path(home) / f"reader-{digest}.lock"
        self._thread_lock = threading.Lock()
        self._fd: int | None = None

    def acquire(self) -> bool:
        self._thread_lock.acquire()
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except BaseException:
                os.close(fd)
                raise
        except BaseException:
            self._thread_lock.release()
            raise
        self._fd = fd
        return True

    def release(self) -> None:
        fd, self._fd = self._fd, None
        try:
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
        finally:
            self._thread_lock.release()

    def __enter__(self) -> ReaderLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
