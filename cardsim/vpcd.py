"""The vpcd bridge: a virtual card behind pcscd's vpcd driver, so pyscard sees a real reader.

vpcd (vsmartcard) listens on TCP 35963 + slot; the card side connects. Every
frame is a 2-byte big-endian length and a payload. A 1-byte payload is a
control code (00 power off, 01 power on, 02 reset, 04 send the ATR back); any
other payload is a C-APDU answered with one R-APDU frame. Closing the socket
is a card removal. pcscd polls presence by asking for the ATR, so the first
04 after a connect is the moment pcscd has seen the card.
"""
from __future__ import annotations

import fcntl
import logging
import os
import socket
import struct
import tempfile
import threading
import time
from pathlib import Path

from .base import CardRemoved, VirtualCard

log = logging.getLogger(__name__)

VPCD_PORT = 35963
CTRL_OFF, CTRL_ON, CTRL_RESET, CTRL_ATR = 0x00, 0x01, 0x02, 0x04
# pcscd notices a removal at its next presence poll; a card put back sooner may go
# unnoticed (checked on these machines: NOTES-ENVIRONMENT, "PC/SC without hardware").
MIN_ABSENCE_S = 2.0
LOCK_DIR = Path(os.environ.get("CARDSIM_LOCK_DIR", tempfile.gettempdir()))


class SlotBusy(RuntimeError):
    """Another bridge (in this or another process) already holds this vpcd slot."""


class NotSeen(TimeoutError):
    """The card is connected but pcscd has not polled it (pcscd down, or the slot held by someone else)."""


class _PeerClosed(Exception):
    """vpcd closed the connection (pcscd stopped or restarted)."""


_QUICKACK = getattr(socket, "TCP_QUICKACK", None)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < n:
        if _QUICKACK is not None:
            # vpcd writes the length and the APDU in two send()s without TCP_NODELAY: with our
            # ACK delayed (Linux: 40 ms) Nagle holds the APDU back. ACK at once (reset by the kernel
            # after each read, so set it every time).
            sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
        chunk = sock.recv(n - len(chunks))
        if not chunk:
            raise _PeerClosed
        chunks += chunk
    return bytes(chunks)


def read_frame(sock: socket.socket) -> bytes:
    (length,) = struct.unpack(">H", _recv_exact(sock, 2))
    return _recv_exact(sock, length)


def write_frame(sock: socket.socket, payload: bytes) -> None:
    if len(payload) > 0xFFFF:
        raise ValueError("a vpcd frame holds at most 65535 bytes")
    sock.sendall(struct.pack(">H", len(payload)) + payload)


class _SlotLock:
    """An flock on /tmp/cardsim-vpcd-<host>-<port>.lock: one card per vpcd slot, across processes."""

    def __init__(self, host: str, port: int) -> None:
        self.path = LOCK_DIR / f"cardsim-vpcd-{host}-{port}.lock"
        self._fd: int | None = None

    def acquire(self) -> float:
        """Take the slot; returns when (time.time()) the previous card left it, 0 if unknown."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise SlotBusy(f"vpcd port {self.path.stem.rsplit('-', 1)[-1]} is in use by another virtual card "
                           f"(lock {self.path}, holder: {holder})") from None
        previous = os.pread(fd, 64, 0).decode(errors="replace").split()
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}\n".encode(), 0)
        self._fd = fd
        if previous[:1] == ["pid"]:
            return time.time()  # the holder died without releasing: it may have left just now
        try:
            return float(previous[1]) if previous[:1] == ["left"] else 0.0
        except (IndexError, ValueError):
            return 0.0

    def release(self, left_at: float) -> None:
        if self._fd is not None:
            # The next card in this slot waits out the absence pcscd needs to notice this one left.
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, f"left {left_at:.3f}\n".encode(), 0)
            os.close(self._fd)
            self._fd = None


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a bridge (in any process on this machine) holds this vpcd port now."""
    path = _SlotLock(host, port).path
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


class VpcdBridge:
    """Puts one virtual card in one vpcd reader slot, served by a background thread.

    `start()` inserts the card and returns once pcscd has seen it (`wait=True`);
    `remove()` closes the socket (pcscd sees a removal); `insert()` puts it back,
    no sooner than MIN_ABSENCE_S after the removal; `stop()` removes it and ends
    the thread. A fault plan's CardRemoved closes the socket too: the command is
    never answered, as when a card leaves the field mid-command. If vpcd goes
    away (pcscd restarted), the bridge reconnects with a growing pause.
    """

    def __init__(self, card: VirtualCard, port: int = VPCD_PORT, host: str = "127.0.0.1", *,
                 min_absence_s: float = MIN_ABSENCE_S) -> None:
        self.card = card
        self.host, self.port = host, port
        self.min_absence_s = min_absence_s
        self.removals = 0  # how often the card left the reader (remove() or a fault)
        self.apdus = 0
        self._lock = _SlotLock(host, port)
        self._cond = threading.Condition()
        self._want_inserted = False
        self._stopping = False
        self._sock: socket.socket | None = None
        self._seen = False  # pcscd has powered the card on and read its ATR: clients can connect
        self._powered = False
        self._removed_at = 0.0
        self._removed_by_fault = False
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"VpcdBridge({self.card!r}, {self.host}:{self.port}, inserted={self.inserted})"

    # -- control (any thread) ----------------------------------------------------
    @property
    def inserted(self) -> bool:
        """The socket to vpcd is open (the card is in the reader)."""
        return self._sock is not None

    @property
    def wants_insertion(self) -> bool:
        """False after remove(), stop() or a fault-plan removal; True after start() or insert()."""
        return self._want_inserted

    def start(self, *, wait: bool = True, timeout: float = 15.0) -> VpcdBridge:
        if self._thread is not None:
            raise RuntimeError("bridge already started")
        previous_left = self._lock.acquire()
        if previous_left:
            self._removed_at = time.monotonic() - max(0.0, time.time() - previous_left)
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"vpcd-{self.port}", daemon=True)
        self._thread.start()
        try:
            self.insert(wait=wait, timeout=timeout)
        except BaseException:
            self.stop()  # give the slot back: nobody will call stop() on a bridge that never started
            raise
        return self

    def insert(self, *, wait: bool = True, timeout: float = 15.0) -> None:
        """Put the card (back) in the reader. A fault that removed it is spent: clear it."""
        with self._cond:
            if self._removed_by_fault:
                self.card.faults.remove_after = None
                self.card.faults.remove_after_executing = None
                self._removed_by_fault = False
            self._want_inserted = True
            self._cond.notify_all()
        if wait:
            self.wait_seen(timeout)

    def wait_seen(self, timeout: float = 15.0) -> None:
        """Block until pcscd has polled the inserted card."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._seen or not self._want_inserted, timeout):
                raise NotSeen(f"pcscd did not take the card on {self.host}:{self.port} in {timeout:.0f} s;"
                              " is pcscd running with vpcd, and is no other card on this slot?")

    def wait_removed(self, timeout: float = 15.0) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: self._sock is None, timeout):
                raise TimeoutError(f"card on {self.host}:{self.port} still inserted after {timeout:.0f} s")

    def remove(self) -> None:
        """Take the card out of the reader (close the socket)."""
        with self._cond:
            self._want_inserted = False
            self._close_locked()
            self._cond.notify_all()

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stopping = True
            self._want_inserted = False
            self._close_locked()
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._lock.release(left_at=time.time())
        self.card.save()

    def __enter__(self) -> VpcdBridge:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- the serving thread --------------------------------------------------------
    def _close_locked(self) -> None:
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._sock.close()
            self._sock = None
            self._seen = False
            self._powered = False
            self._removed_at = time.monotonic()
            self.removals += 1

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            # Whatever ended the thread, vpcd must see the card leave rather than wait on it.
            with self._cond:
                self._close_locked()
                self._want_inserted = False
                self._cond.notify_all()

    def _loop(self) -> None:
        pause = 0.2
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._stopping or self._want_inserted)
                if self._stopping:
                    return
                # Respect the absence time so pcscd notices that the card had left.
                delay = self._removed_at + self.min_absence_s - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            try:
                sock = socket.create_connection((self.host, self.port), timeout=5)
            except OSError as exc:
                log.info("vpcd %s:%s not reachable (%s); retrying in %.1f s",
                         self.host, self.port, exc, pause)
                with self._cond:
                    self._cond.wait_for(lambda: self._stopping or not self._want_inserted, pause)
                pause = min(pause * 2, 5.0)
                continue
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._cond:
                if self._stopping or not self._want_inserted:
                    sock.close()
                    continue
                self._sock = sock
            self.card.power_on()
            try:
                self._serve(sock)
                pause = 0.2
            except (_PeerClosed, OSError):
                with self._cond:
                    if self._sock is not sock:
                        continue  # we closed it ourselves (remove, stop) while the thread was reading
                    # vpcd hung up (pcscd stopping or restarting): stay wanted, try again politely.
                    log.info("vpcd %s:%s closed the connection; reconnecting", self.host, self.port)
                    self._close_locked()
                    self._cond.wait_for(lambda: self._stopping, pause)
                pause = min(pause * 2, 5.0)

    def _serve(self, sock: socket.socket) -> None:
        while True:
            frame = read_frame(sock)
            if len(frame) == 1:
                self._control(sock, frame[0])
                continue
            try:
                answer = self.card.transmit(frame)
            except CardRemoved:
                # The field dropped: the command gets no answer and pcscd sees the card leave.
                self.card.save()
                with self._cond:
                    self._want_inserted = False
                    self._removed_by_fault = True
                    if self._sock is sock:
                        self._close_locked()
                    self._cond.notify_all()
                return
            except Exception:
                # A bug in the virtual card must not leave vpcd waiting forever for an answer
                # (pcscd's reader would hang): answer "no precise diagnosis" and log it.
                log.exception("virtual card failed on APDU %s", frame[:5].hex().upper())
                answer = b"\x6f\x00"
            self.apdus += 1
            write_frame(sock, answer)

    def _control(self, sock: socket.socket, code: int) -> None:
        if code == CTRL_ATR:
            write_frame(sock, self.card.atr)
            if self._powered and not self._seen:
                # pcscd polls presence (ATR), powers the card on, then reads the ATR again:
                # only then do PC/SC clients find a card in the reader.
                with self._cond:
                    self._seen = True
                    self._cond.notify_all()
        elif code in (CTRL_ON, CTRL_RESET):
            self._powered = True
            self.card.power_on()
        elif code == CTRL_OFF:
            self.card.power_off()
        else:
            log.warning("vpcd %s:%s sent unknown control code %02X", self.host, self.port, code)
