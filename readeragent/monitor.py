"""The card monitor: watches one PC/SC reader and reports cards presented and removed, plus heartbeats.

Presence comes from SCardGetStatusChange (pcscd tells us, no polling connection). On each card
presented the monitor connects once, reads the UID with the reader's GET DATA `FF CA 00 00 00`
(answered by the reader, or by the virtual card behind vpcd), and reports UID, ATR and reader name
as a signed `cms.station_report` (jobproto.md), with a "chip_type" hint for DESFire cards (their
GetVersion tells EV1, EV2 and EV3 apart). A card that is not a DESFire and selects the GP Issuer
Security Domain is reported as "jcop4" with its "kdd": the Key Diversification Data read by a plain
GET DATA 'CF' (no secure channel, never INITIALIZE UPDATE, so no card counter moves), which the CMS
diversifies the ISD keys with. The CMS answers with a job on `station.<code>`.

A card_presented report the broker did not take (Redis down or restarting) is owed while that card stays
in the reader: what it says of the card (UID, ATR, chip type, KDD; never keys, never the signed document)
is kept, and the run loop makes a fresh report from it (new nonce and time: the CMS checks the time and
keys the presentation on both) every PRESENTED_RETRY_S until the broker takes it. Removing the card, or
another card's presentation, drops it. The operator need not present the card again after an outage.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

from . import protocol
from .identity import Identity

log = logging.getLogger(__name__)

GET_UID = [0xFF, 0xCA, 0x00, 0x00, 0x00]
# GP Card Spec 2.3: the Issuer Security Domain (A000000151000000 on JCOP) and GET DATA tag 'CF',
# Key Diversification Data, answered as the TLV CF 0A <10 bytes>.
ISD_AID = bytes.fromhex("A000000151000000")
SELECT_ISD = [0x00, 0xA4, 0x04, 0x00, len(ISD_AID), *ISD_AID, 0x00]
GET_KDD = [0x80, 0xCA, 0x00, 0xCF, 0x00]


class ReaderError(RuntimeError):
    """No such reader, or pcscd is not there."""


def list_readers() -> list[str]:
    from smartcard.System import readers

    try:
        return [str(r) for r in readers()]
    except Exception as exc:  # pyscard raises its own types (and versions differ) when pcscd is down
        raise ReaderError(f"pcscd is not reachable ({exc}); is it running?") from None


def pick_reader(wanted: str | None) -> str:
    """The reader named `wanted` (exact, else the only one containing it), or the first reader."""
    names = list_readers()
    if not names:
        raise ReaderError("no PC/SC reader found")
    if not wanted:
        return names[0]
    if wanted in names:
        return wanted
    matches = [n for n in names if wanted.lower() in n.lower()]
    if len(matches) != 1:
        raise ReaderError(f"reader {wanted!r} matches {matches or 'nothing'}; readers: {names}")
    return matches[0]


def connect(reader_name: str, *, reset_on_close: bool = False):
    """A pyscard connection to the card in `reader_name` (raises ReaderError when there is none).

    pyscard's default disposition is SCARD_UNPOWER_CARD: every disconnect powered the card down, and
    pcscd's power cycle under the next client was seen as a transaction failure. The monitor's reads
    leave the card as it is; a job's connection resets it on close (its secure sessions end with it).
    """
    from smartcard.Exceptions import CardConnectionException, NoCardException
    from smartcard.scard import SCARD_LEAVE_CARD, SCARD_RESET_CARD
    from smartcard.System import readers

    for reader in readers():
        if str(reader) == reader_name:
            connection = reader.createConnection()
            try:
                connection.connect(disposition=SCARD_RESET_CARD if reset_on_close else SCARD_LEAVE_CARD)
            except (NoCardException, CardConnectionException) as exc:
                raise ReaderError(f"no card in {reader_name}: {exc.__class__.__name__}") from None
            return connection
    raise ReaderError(f"reader {reader_name!r} is gone")


PRESENT_READ_ATTEMPTS = 4
PRESENT_READ_PAUSE_S = 0.3
# how often an owed card_presented report (the broker did not take it) is made again and sent: a broker
# that is down answers each try after its connection retries, so faster would only spin
PRESENTED_RETRY_S = 2.0


def reader_has_card(reader_name: str) -> bool:
    """pcscd says a card is in `reader_name` (no connection, nothing sent to the card)."""
    from smartcard import scard

    hresult, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    if hresult != scard.SCARD_S_SUCCESS:
        return False
    try:
        hresult, states = scard.SCardGetStatusChange(context, 0, [(reader_name, scard.SCARD_STATE_UNAWARE)])
        if hresult != scard.SCARD_S_SUCCESS:
            return False
        return bool(states[0][1] & scard.SCARD_STATE_PRESENT)
    finally:
        scard.SCardReleaseContext(context)


def read_uid(connection) -> str | None:
    """The UID the reader reports (GET DATA FF CA), hex upper; None if the reader does not answer it."""
    from smartcard.Exceptions import CardConnectionException

    try:
        data, sw1, sw2 = connection.transmit(list(GET_UID))
    except CardConnectionException:
        return None
    if (sw1, sw2) != (0x90, 0x00) or not data:
        return None
    return bytes(data).hex().upper()


# GetVersion hardware major version -> chip type (EV1 0x01, EV2 0x12, EV3 0x33: NXP data sheets,
# as Proxmark3 `hf mfdes info` tells the generations apart).
DESFIRE_MAJOR = {0x01: "desfire_ev1", 0x12: "desfire_ev2", 0x33: "desfire_ev3"}


def detect_chip_type(connection) -> str | None:
    """A hint for the CMS: the DESFire generation from GetVersion (unauthenticated), else None."""
    from smartcard.Exceptions import CardConnectionException

    try:
        data, sw1, sw2 = connection.transmit([0x90, 0x60, 0x00, 0x00, 0x00])
        if (sw1, sw2) != (0x91, 0xAF) or len(data) < 4:
            return None
        major = data[3]
        for _ in range(3):  # finish the chain (3 frames) so the card is left idle
            _, sw1, sw2 = connection.transmit([0x90, 0xAF, 0x00, 0x00, 0x00])
            if (sw1, sw2) != (0x91, 0xAF):
                break
    except CardConnectionException:
        return None
    return DESFIRE_MAJOR.get(major)


def read_kdd(connection) -> str | None:
    """The KDD of a GP card (SELECT ISD, GET DATA CF), hex upper; None for a card that is not one.

    Plain commands only: no INITIALIZE UPDATE, which would spend a challenge and, on some cards,
    count towards the authentication lockout. An answer that is not CF 0A <10 bytes> is not used.
    """
    from smartcard.Exceptions import CardConnectionException

    try:
        _, sw1, sw2 = connection.transmit(list(SELECT_ISD))
        if (sw1, sw2) != (0x90, 0x00) and sw1 != 0x61:  # 61xx: more FCI waiting, which is not needed
            return None
        data, sw1, sw2 = connection.transmit(list(GET_KDD))
    except CardConnectionException:
        return None
    data = bytes(data)
    if (sw1, sw2) != (0x90, 0x00) or len(data) != 12 or data[:2] != b"\xCF\x0A":
        return None
    return data[2:].hex().upper()


def make_report(identity: Identity, kind: str, reader: str, *, uid: str | None = None,
                atr: str | None = None, chip_type: str | None = None, kdd: str | None = None) -> dict:
    report = {"v": 1, "type": kind, "station": identity.station, "reader": reader, "at": int(time.time()),
              "nonce": os.urandom(12).hex()}
    if kind == "heartbeat":
        report["ips"] = protocol.host_addresses()  # the CMS watches where its stations are seen from
    if kind == "card_presented":
        report.update(uid=uid, atr=atr)
        if chip_type:
            report["chip_type"] = chip_type  # a hint; the CMS keeps what it knows of a registered card
        if kdd:
            report["kdd"] = kdd  # a JCOP card's GP KDD: the CMS diversifies its ISD keys from it
    return protocol.sign_with(report, identity.sign_private_key)


class CardMonitor(threading.Thread):
    """Watches `reader`; calls `send(task_name, report)` for each event; keeps `status` current.

    `card_lock` is shared with the job runner so the UID read never interleaves with a job's APDUs.
    """

    def __init__(self, identity: Identity, reader: str, send: Callable[[str, dict], None], *,
                 card_lock: threading.Lock, heartbeat_s: float = 30.0, poll_ms: int = 500) -> None:
        super().__init__(name="card-monitor", daemon=True)
        self.identity = identity
        self.reader = reader
        self.send = send
        self.card_lock = card_lock
        self.heartbeat_s = heartbeat_s
        self.poll_ms = poll_ms
        self.stopping = threading.Event()
        self.status: dict = {"card": None, "atr": None, "present": False, "reports": 0, "errors": 0,
                             "report_waiting": False}
        self.on_change: Callable[[], None] | None = None
        self.clock: Callable[[], float] = time.monotonic
        # the owed card_presented report (see the module's docstring): its fields, when it was first tried,
        # when last, and how many tries. Only the monitor's thread touches these (run, or a test calling
        # _presented / _removed / retry_owed), so they need no lock; nothing here touches the card, so
        # card_lock is not taken either
        self._owed: dict | None = None
        self._owed_since = self._owed_tried = 0.0
        self._owed_tries = 0
        self._last_error = ""

    def stop(self) -> None:
        self.stopping.set()

    def _send(self, kind: str, **fields) -> bool:
        """Sign a fresh report and publish it; False (an error counted) if the broker did not take it."""
        try:
            self.send("cms.station_report", make_report(self.identity, kind, self.reader, **fields))
        except Exception as exc:  # the broker may be down: keep watching, say so on the status line
            self.status["errors"] += 1
            self._last_error = exc.__class__.__name__
            return False
        self.status["reports"] += 1
        return True

    def _report(self, kind: str, **fields) -> bool:
        if self._send(kind, **fields):
            return True
        log.warning("could not send %s report: %s", kind, self._last_error)
        return False

    def _owe(self, fields: dict) -> None:
        self._owed = dict(fields)
        self._owed_since = self._owed_tried = self.clock()
        self._owed_tries = 1
        self.status["report_waiting"] = True
        log.warning("card %s in %s: its report waits for the broker (made again and sent every %.0f s while "
                    "the card stays)", fields.get("uid"), self.reader, PRESENTED_RETRY_S)

    def _drop_owed(self, why: str = "") -> None:
        if self._owed is not None and why:
            log.warning("card %s: its report never went (%s): present it again", self._owed.get("uid"), why)
        self._owed = None
        self._owed_tries = 0
        self.status["report_waiting"] = False

    def retry_owed(self) -> bool:
        """Send the owed card_presented report again, made fresh (never the old signed document: its time
        would age past the CMS's skew check), at most every PRESENTED_RETRY_S after the last try ended.
        The run loop calls it when pcscd saw no change in the reader, so the card is still the one the
        report is about. True when it went."""
        if self._owed is None or self.clock() - self._owed_tried < PRESENTED_RETRY_S:
            return False
        self._owed_tries += 1
        sent = self._send("card_presented", **self._owed)
        self._owed_tried = self.clock()
        if not sent:
            log.debug("card %s: report try %d failed: %s", self._owed.get("uid"), self._owed_tries,
                      self._last_error)
            return False
        log.info("card %s in %s reported after the broker came back (try %d, %.0f s after it was presented)",
                 self._owed.get("uid"), self.reader, self._owed_tries, self._owed_tried - self._owed_since)
        self._drop_owed()
        return True

    def _presented(self, atr: bytes) -> None:
        self._drop_owed("another card was presented")  # the card it was about has left the reader
        uid = chip_type = kdd = None
        # pcscd may still be powering a just-inserted card up when we connect ("Transaction failed"):
        # the UID read is a plain GET DATA (no authentication, nothing on the card changes), so a card
        # still in the reader is read again rather than left unreported until it is pulled and put back.
        for attempt in range(PRESENT_READ_ATTEMPTS):
            if attempt:
                if self.stopping.wait(PRESENT_READ_PAUSE_S) or not reader_has_card(self.reader):
                    break
            with self.card_lock:
                try:
                    connection = connect(self.reader)
                except ReaderError:
                    continue
                try:
                    uid = read_uid(connection)
                    chip_type = detect_chip_type(connection) if uid is not None else None
                    if uid is not None and chip_type is None:
                        kdd = read_kdd(connection)
                        chip_type = "jcop4" if kdd is not None else None
                finally:
                    try:
                        connection.disconnect()
                    except Exception:  # noqa: S110 - the card may be gone already
                        pass
            if uid is not None:
                break
            log.info("card in %s: UID read %d of %d failed", self.reader, attempt + 1, PRESENT_READ_ATTEMPTS)
        self.status.update(present=True, card=uid, atr=atr.hex().upper())
        if uid is None:
            log.warning("card in %s did not answer GET DATA FF CA: not reported", self.reader)
            return
        fields = {"uid": uid, "atr": atr.hex().upper(), "chip_type": chip_type, "kdd": kdd}
        if not self._report("card_presented", **fields):
            self._owe(fields)

    def _removed(self) -> None:
        self._drop_owed("the card was removed")
        self.status.update(present=False, card=None, atr=None)
        self._report("card_removed")

    def run(self) -> None:  # pragma: no cover - exercised through pcscd in tests/e2e
        from smartcard import scard

        hresult, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
        if hresult != scard.SCARD_S_SUCCESS:
            log.error("pcscd is not reachable: %s", scard.SCardGetErrorMessage(hresult))
            return
        state = scard.SCARD_STATE_UNAWARE
        present = False
        last_heartbeat = 0.0
        try:
            while not self.stopping.is_set():
                if time.monotonic() - last_heartbeat >= self.heartbeat_s:
                    self._report("heartbeat")
                    last_heartbeat = time.monotonic()
                hresult, states = scard.SCardGetStatusChange(context, self.poll_ms, [(self.reader, state)])
                if hresult == scard.SCARD_E_TIMEOUT:
                    # nothing changed in the reader: an owed report is still about the card in it
                    if self.retry_owed() and self.on_change is not None:
                        self.on_change()
                    continue
                if hresult != scard.SCARD_S_SUCCESS:
                    log.warning("reader %s: %s", self.reader, scard.SCardGetErrorMessage(hresult))
                    self.stopping.wait(1.0)
                    state = scard.SCARD_STATE_UNAWARE
                    continue
                _, event, atr = states[0]
                state = event & ~scard.SCARD_STATE_CHANGED
                now_present = bool(event & scard.SCARD_STATE_PRESENT) and not event & scard.SCARD_STATE_MUTE
                if now_present and not present:
                    self._presented(bytes(atr))
                elif present and not now_present:
                    self._removed()
                present = now_present
                if self.on_change is not None:
                    self.on_change()
        finally:
            scard.SCardReleaseContext(context)
