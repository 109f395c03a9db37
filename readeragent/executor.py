"""Runs one signed job envelope against the card in the reader and returns the signed result.

Order of checks (nothing touches the card before all pass): envelope signature with the CMS key
version it names, station, script digest and vocabulary (`protocol.check_envelope`); the replay
ledger (a job id runs at most once on this station: one atomic claim, before the expiry, so a copy
of a job already run is a replay, never an expiry); the expiry; the card in the reader is the card of
the job (UID); the sealed keys open for this job, station and expiry; every key ref the script names
is in the sealed map. Any failure there gives a signed result with state "refused" and a reason.

Then each step runs once, through `cardproto`, over a `TracingTransport`. Key-bearing exchanges
(authentications, ChangeKey, PUT KEY, STORE DATA or raw steps marked "redact") are recorded with
their bodies replaced by lengths. The first step that fails stops the script:

- a status word the step does not expect -> "failed", with the APDU header, SW and meaning;
- an authentication failure -> "failed" with `error.authentication = true`; never retried (the
  card counts failures and JCOP cards brick, ARCHITECTURE.md "Safety rules");
- the card leaves (CardRemovedError) or the reader fails (TransportError) -> "interrupted";
- a key-changing step (ChangeKey, PUT KEY) whose command went out but whose answer never came or
  did not verify -> that step is "in_flight": the card may or may not hold the new key, and the
  CMS must probe before anything authenticates again. A clear refusal by status word is "failed":
  the card kept its key.

Step field formats (the CMS compiler writes them; refs name entries of the sealed key map):
  AIDs, APDUs, DGIs and data are hex strings; DESFire AIDs are the 3 bytes as sent on the wire.
  `key_type`: "aes128" | "2k3des" | "3k3des" | "des". `desfire.authenticate.mode`: "ev2_first"
  (default for AES on EV2/EV3), "ev2_non_first", "aes" (EV1 0xAA, default for AES on EV1), "iso"
  (0x1A, default for DES types), "native" (0x0A). `comm_mode`: "plain" | "mac" | "full" (default
  "plain"). `desfire.create_file.type`: "standard" | "backup" | "value" | "linear_record" |
  "cyclic_record"; `access`: {"read", "write", "read_write", "change"} key numbers (14 free,
  15 never). `gp.*.keys`: {"enc": ref, "mac": ref, "dek": ref}. `gp.set_status.scope`: "isd" |
  "applications" | "sd_and_associated". `raw.expect_sw`: hex SW or a list of them (default 9000).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from typing import Any

from cardproto.apdu import CommandAPDU, ResponseAPDU
from cardproto.desfire import AccessRights, CommMode, DESFire, KeyType
from cardproto.errors import (
    AuthenticationError,
    CardError,
    CardRemovedError,
    ProtocolUsageError,
    StatusWordError,
    TransportError,
)
from cardproto.gp import commands as gp
from cardproto.gp import content as gp_content
from cardproto.gp import scp02, scp03
from cardproto.gp.channel import PlainChannel
from cardproto.keys import KeyType as GpKeyType
from cardproto.keys import StaticKeys
from cardproto.sw import describe
from cardproto.transport import TracingTransport

from . import protocol
from .identity import Identity
from .ledger import ReplayLedger

KEY_CHANGING_OPS = frozenset({"desfire.change_key", "gp.put_key"})
# Steps whose every exchange carries a key, a cryptogram or a challenge answer.
REDACTED_OPS = frozenset({"desfire.authenticate", "desfire.change_key", "gp.open_scp03", "gp.open_scp02",
                          "gp.put_key"})
MAX_STEPS = 2000


class StepCheckError(CardError):
    """The card answered, but not what the step expects (a key version, a KVN)."""


class KddMismatchError(CardError):
    """INITIALIZE UPDATE's answer starts with another KDD than the job's card: another chip is in the
    reader (same UID, different chip), so EXTERNAL AUTHENTICATE is not sent."""


class _Redactor:
    """Between the protocol objects and the tracer: while `on`, every exchange is recorded redacted.

    With `expect_kdd`, every INITIALIZE UPDATE answer (CLA 8x INS 50, 9000) must start with those
    10 bytes (GP Card Spec 2.3: the answer's Key Diversification Data) before the host goes on.
    """

    def __init__(self, tracing: TracingTransport, expect_kdd: bytes | None = None) -> None:
        self.tracing = tracing
        self.on = False
        self.expect_kdd = expect_kdd

    def redact_next(self) -> None:
        self.tracing.redact_next()

    def transmit(self, apdu: bytes) -> bytes:
        if self.on:
            self.tracing.redact_next()
        answer = self.tracing.transmit(apdu)
        if self.expect_kdd is not None and len(apdu) >= 2 and apdu[0] & 0xF0 == 0x80 and apdu[1] == 0x50 \
                and answer[-2:] == b"\x90\x00" and answer[:10] != self.expect_kdd:
            raise KddMismatchError(f"INITIALIZE UPDATE answered KDD {bytes(answer[:10]).hex().upper()}, the "
                                   f"job's card has {self.expect_kdd.hex().upper()}: another chip; "
                                   "EXTERNAL AUTHENTICATE not sent", command="INITIALIZE UPDATE",
                                   apdu=bytes(apdu[:4]), sw=0x9000)
        return answer


# --- the run of one script ---------------------------------------------------------------------

DESFIRE_KEY_TYPES = {"aes128": KeyType.AES, "2k3des": KeyType.DES, "3k3des": KeyType.TDES3K,
                     "des": KeyType.DES}
COMM_MODES = {"plain": CommMode.PLAIN, "mac": CommMode.MAC, "full": CommMode.FULL}
STATUS_SCOPES = {"isd": gp.StatusScope.ISD, "applications": gp.StatusScope.APPLICATIONS,
                 "load_files": gp.StatusScope.LOAD_FILES,
                 "sd_and_associated": gp.StatusScope.SD_AND_ASSOCIATED}


class _Run:
    def __init__(self, transport: _Redactor, keys: Mapping[str, bytearray], chip_type: str) -> None:
        self.transport = transport
        self.keys = keys
        self.chip_type = chip_type
        self.gp_channel = None
        self._df: DESFire | None = None

    @property
    def df(self) -> DESFire:
        if self._df is None:
            self._df = DESFire(self.transport)
        return self._df

    @property
    def channel(self):
        return self.gp_channel if self.gp_channel is not None else PlainChannel(self.transport)

    @contextmanager
    def key(self, ref: str):
        """A private copy of one sealed key for one call, wiped after it (cardproto may keep or wipe)."""
        copy = bytearray(self.keys[ref])
        try:
            yield copy
        finally:
            copy[:] = bytes(len(copy))

    def static_keys(self, refs: Any, kvn: int, key_type: GpKeyType) -> StaticKeys:
        if not isinstance(refs, Mapping) or set(refs) != {"enc", "mac", "dek"}:
            raise ProtocolUsageError("keys must name exactly the enc, mac and dek refs")
        return StaticKeys(self.keys[refs["enc"]], self.keys[refs["mac"]], self.keys[refs["dek"]], kvn=kvn,
                          key_type=key_type)

    def close_gp(self) -> None:
        if self.gp_channel is not None:
            self.gp_channel.close()
            self.gp_channel = None

    def close(self) -> None:
        self.close_gp()
        if self._df is not None:
            self._df.close()


def _hex(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise ProtocolUsageError(f"{what} must be a hex string")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise ProtocolUsageError(f"{what} is not hex") from None


def _choice(table: Mapping[str, Any], value: Any, what: str) -> Any:
    if value not in table:
        raise ProtocolUsageError(f"{what} {value!r} is not one of {sorted(table)}")
    return table[value]


# --- DESFire ops -------------------------------------------------------------------------------

def _desfire_select_application(run: _Run, step: Mapping) -> None:
    run.df.select_application(_hex(step["aid"], "aid"))


def _desfire_authenticate(run: _Run, step: Mapping) -> dict:
    key_type = _choice(DESFIRE_KEY_TYPES, step["key_type"], "key_type")
    default = ("ev2_first" if run.chip_type in ("desfire_ev2", "desfire_ev3") else "aes") \
        if key_type == KeyType.AES else "iso"
    mode = step.get("mode", default)
    key_no = step["key_no"]
    with run.key(step["key"]) as key:
        if mode == "ev2_first":
            run.df.authenticate_ev2_first(key_no, key)
        elif mode == "ev2_non_first":
            run.df.authenticate_ev2_non_first(key_no, key)
        elif mode == "aes":
            run.df.authenticate_aes(key_no, key)
        elif mode in ("iso", "native"):
            run.df.authenticate_legacy(key_no, key, key_type, native=mode == "native")
        else:
            raise ProtocolUsageError(f"authentication mode {mode!r} is unknown")
    return {"authenticated": True, "key_no": key_no}


def _desfire_get_key_version(run: _Run, step: Mapping) -> dict:
    version = run.df.get_key_version(step["key_no"])
    expect = step.get("expect")
    if expect is not None and version != expect:
        raise StepCheckError(f"DESFire GetKeyVersion: key {step['key_no']} is at version {version}, the "
                             f"step expects {expect}", command="DESFire GetKeyVersion", sw=0x9100)
    return {"key_version": version}


def _desfire_change_key(run: _Run, step: Mapping) -> dict:
    key_type = _choice(DESFIRE_KEY_TYPES, step["key_type"], "key_type")
    with run.key(step["new_key"]) as new_key:
        if step.get("old_key") is not None:
            with run.key(step["old_key"]) as old_key:
                run.df.change_key(step["key_no"], new_key, step["new_version"], old_key=old_key,
                                  key_type=key_type)
        else:
            run.df.change_key(step["key_no"], new_key, step["new_version"], key_type=key_type)
    return {"acknowledged": True}


def _desfire_get_application_ids(run: _Run, step: Mapping) -> dict:
    return {"aids": [int.from_bytes(aid, "big") for aid in run.df.get_application_ids()]}


def _desfire_get_file_ids(run: _Run, step: Mapping) -> dict:
    return {"file_ids": sorted(run.df.get_file_ids())}


def _desfire_change_key_settings(run: _Run, step: Mapping) -> None:
    run.df.change_key_settings(step["key_settings"])


def _desfire_create_application(run: _Run, step: Mapping) -> None:
    run.df.create_application(_hex(step["aid"], "aid"), step["key_settings"], step["num_keys"],
                              _choice(DESFIRE_KEY_TYPES, step["key_type"], "key_type"))


def _desfire_delete_application(run: _Run, step: Mapping) -> None:
    run.df.delete_application(_hex(step["aid"], "aid"))


def _access(value: Any) -> AccessRights:
    if isinstance(value, Mapping):
        unknown = set(value) - {"read", "write", "read_write", "change"}
        if unknown:
            raise ProtocolUsageError(f"access has unknown fields {sorted(unknown)}")
        return AccessRights(**value)
    if isinstance(value, int):
        return AccessRights.from_bytes(value.to_bytes(2, "little"))
    raise ProtocolUsageError("access must be an object of key numbers")


def _desfire_create_file(run: _Run, step: Mapping) -> None:
    df, file_no = run.df, step["file_no"]
    comm = _choice(COMM_MODES, step["comm_mode"], "comm_mode")
    access = _access(step["access"])
    kind = step["type"]
    if kind == "standard":
        df.create_std_data_file(file_no, comm, access, step["size"])
    elif kind == "backup":
        df.create_backup_data_file(file_no, comm, access, step["size"])
    elif kind == "value":
        df.create_value_file(file_no, comm, access, lower_limit=step.get("lower_limit", 0),
                             upper_limit=step["upper_limit"], value=step.get("value", 0),
                             limited_credit=bool(step.get("limited_credit", False)),
                             free_get_value=bool(step.get("free_get_value", False)))
    elif kind == "linear_record":
        df.create_linear_record_file(file_no, comm, access, step["record_size"], step["max_records"])
    elif kind == "cyclic_record":
        df.create_cyclic_record_file(file_no, comm, access, step["record_size"], step["max_records"])
    else:
        raise ProtocolUsageError(f"file type {kind!r} is unknown")


def _comm(step: Mapping) -> CommMode:
    return _choice(COMM_MODES, step.get("comm_mode", "plain"), "comm_mode")


def _desfire_write_data(run: _Run, step: Mapping) -> dict:
    data = _hex(step["data_hex"], "data_hex")
    run.df.write_data(step["file_no"], step.get("offset", 0), data, _comm(step))
    return {"bytes": len(data)}


def _desfire_write_record(run: _Run, step: Mapping) -> dict:
    data = _hex(step["data_hex"], "data_hex")
    run.df.write_record(step["file_no"], step.get("offset", 0), data, _comm(step))
    return {"bytes": len(data)}


def _desfire_credit(run: _Run, step: Mapping) -> None:
    run.df.credit(step["file_no"], step["value"], _comm(step))


def _desfire_commit(run: _Run, step: Mapping) -> None:
    run.df.commit_transaction()


# --- GlobalPlatform ops ------------------------------------------------------------------------

def _select(run: _Run, step: Mapping) -> None:
    run.close_gp()  # a SELECT ends any secure channel on the card side
    gp.select(run.transport, _hex(step["aid"], "aid"))


def _gp_open_scp03(run: _Run, step: Mapping) -> dict:
    run.close_gp()
    sd_aid = _hex(step["sd_aid"], "sd_aid") if step.get("sd_aid") else None
    with run.static_keys(step["keys"], step["kvn"], GpKeyType.AES) as keys:
        run.gp_channel = scp03.open_channel(run.transport, keys, step.get("security_level", 0x33),
                                            s16=bool(step.get("s16", False)), sd_aid=sd_aid)
    return {"kvn": run.gp_channel.kvn}


def _gp_open_scp02(run: _Run, step: Mapping) -> dict:
    run.close_gp()
    with run.static_keys(step["keys"], step["kvn"], GpKeyType.DES3) as keys:
        run.gp_channel = scp02.open_channel(run.transport, keys, step.get("security_level", 0x01),
                                            i_param=step.get("i", 0x55))
    return {"kvn": getattr(run.gp_channel, "kvn", step["kvn"])}


def _secure(run: _Run, op: str):
    if run.gp_channel is None:
        raise ProtocolUsageError(f"{op} needs an open secure channel (gp.open_scp03/gp.open_scp02 first)")
    return run.gp_channel


def _gp_put_key(run: _Run, step: Mapping) -> dict:
    channel = _secure(run, "gp.put_key")
    with run.static_keys(step["keys"], step["kvn"], channel.key_type) as keys:
        gp.put_key(channel, keys, replace_kvn=step.get("replace_kvn", 0))
    return {"kcv_match": True, "kvn": step["kvn"]}


def _gp_delete_key(run: _Run, step: Mapping) -> None:
    gp.delete_key(_secure(run, "gp.delete_key"), kvn=step["kvn"], key_id=step.get("key_id"))


def _gp_key_information(run: _Run, step: Mapping) -> dict:
    """The safe probe: an observation, never a failure (the CMS decides from `kvns` which keys hold)."""
    kvns = sorted({info.kvn for info in gp.key_information(run.channel)})
    observed: dict = {"kvns": kvns}
    if step.get("expect_kvn") is not None:
        observed["holds_expected"] = step["expect_kvn"] in kvns
    return observed


def _gp_get_status(run: _Run, step: Mapping) -> dict:
    """The life cycle probe: the card's answer is the observation; the CMS decides what it proves.
    An authenticated ISD refusing GET STATUS with 6985 is reported as such, not as a failure (a
    CARD_LOCKED card refuses everything but unlock / terminate, GP 2.3 5.1.1.4)."""
    scope = _choice(STATUS_SCOPES, step["scope"], "scope")
    try:
        entries = gp.get_status(_secure(run, "gp.get_status"), scope)
    except StatusWordError as exc:
        if exc.sw == 0x6A88 and scope != gp.StatusScope.ISD:
            entries = []  # "referenced data not found" (GP 2.3 11.4.3): nothing of this kind is registered
        elif exc.sw != 0x6985:
            raise
        else:
            return {"refused_sw": "6985"}
    observed: dict = {"entries": len(entries)}
    if scope == gp.StatusScope.ISD and entries:
        observed["life_cycle"] = entries[0].life_cycle
    elif scope != gp.StatusScope.ISD:
        # the registry probe: every AID of this kind, so the CMS settles a lost INSTALL / DELETE
        observed["aids"] = [entry.aid.hex().upper() for entry in entries]
    return observed


def _gp_store_data(run: _Run, step: Mapping) -> dict:
    dgi = step["dgi"]
    dgi_tag = int(dgi, 16) if isinstance(dgi, str) else dgi
    data = _hex(step["data_hex"], "data_hex")
    gp.store_data(_secure(run, "gp.store_data"), dgi_tag, data, redact=bool(step.get("redact", False)))
    return {"bytes": len(data)}


def _gp_install(run: _Run, step: Mapping) -> None:
    gp_content.install_for_install(
        _secure(run, "gp.install"), _hex(step["package_aid"], "package_aid"),
        _hex(step["module_aid"], "module_aid"), _hex(step["aid"], "aid"),
        privileges=_hex(step.get("privileges_hex", "00"), "privileges_hex"),
        parameters=_hex(step.get("params_hex", ""), "params_hex"))


def _gp_delete(run: _Run, step: Mapping) -> None:
    gp_content.delete(_secure(run, "gp.delete"), _hex(step["aid"], "aid"))


def _gp_set_status(run: _Run, step: Mapping) -> None:
    scope = _choice(STATUS_SCOPES, step["scope"], "scope")
    aid = _hex(step["aid"], "aid") if step.get("aid") else b""
    gp.set_status(_secure(run, "gp.set_status"), scope, step["state"], aid)


def _gp_lock_card(run: _Run, step: Mapping) -> None:
    gp.lock_card(_secure(run, "gp.lock_card"))


def _raw(run: _Run, step: Mapping) -> dict:
    apdu = _hex(step["apdu"], "apdu")
    CommandAPDU.parse(apdu)  # refuses a malformed APDU before it reaches the card
    expect = step.get("expect_sw", "9000")
    expected = tuple(int(sw, 16) for sw in (expect if isinstance(expect, list) else [expect]))
    response = ResponseAPDU.parse(run.transport.transmit(apdu), command="raw APDU")
    response.check(command=f"raw APDU {apdu[:4].hex().upper()}", expected=expected, apdu=apdu[:5])
    return {"sw": f"{response.sw:04X}"}


HANDLERS: dict[str, Callable[[_Run, Mapping], dict | None]] = {
    "select": _select,
    "raw": _raw,
    "gp.open_scp03": _gp_open_scp03,
    "gp.open_scp02": _gp_open_scp02,
    "gp.put_key": _gp_put_key,
    "gp.delete_key": _gp_delete_key,
    "gp.key_information": _gp_key_information,
    "gp.get_status": _gp_get_status,
    "gp.store_data": _gp_store_data,
    "gp.install": _gp_install,
    "gp.delete": _gp_delete,
    "gp.set_status": _gp_set_status,
    "gp.lock_card": _gp_lock_card,
    "desfire.select_application": _desfire_select_application,
    "desfire.authenticate": _desfire_authenticate,
    "desfire.get_key_version": _desfire_get_key_version,
    "desfire.get_application_ids": _desfire_get_application_ids,
    "desfire.get_file_ids": _desfire_get_file_ids,
    "desfire.change_key": _desfire_change_key,
    "desfire.change_key_settings": _desfire_change_key_settings,
    "desfire.create_application": _desfire_create_application,
    "desfire.delete_application": _desfire_delete_application,
    "desfire.create_file": _desfire_create_file,
    "desfire.write_data": _desfire_write_data,
    "desfire.write_record": _desfire_write_record,
    "desfire.credit": _desfire_credit,
    "desfire.commit": _desfire_commit,
}
assert set(HANDLERS) == set(protocol.STEP_FIELDS), "every op of the protocol has a handler"


# --- errors and results ------------------------------------------------------------------------

def _error(index: int | None, op: str | None, exc: BaseException, trace: list) -> dict:
    if isinstance(exc, CardError):
        apdu = exc.apdu.hex().upper()[:10] if exc.apdu else None
        sw = exc.sw_hex
        message = str(exc)
    else:  # a bug or a malformed step: name the type, keep the text short
        apdu, sw, message = None, None, f"{type(exc).__name__}: {str(exc)[:200]}"
    if apdu is None:  # the header of the last command sent, as recorded (redacted or not)
        last_tx = next((e for e in reversed(trace) if e.direction == "TX"), None)
        apdu = last_tx.apdu_hex[:10] if last_tx is not None else None
    meaning = describe(exc.sw).meaning if isinstance(exc, CardError) and exc.sw is not None else None
    return {"step": index, "op": op, "apdu": apdu, "sw": sw, "meaning": meaning,
            "kind": type(exc).__name__, "message": message,
            "authentication": isinstance(exc, AuthenticationError)}


def _step_status(op: str, exc: BaseException, sent: bool) -> str:
    if op in KEY_CHANGING_OPS and sent and not isinstance(exc, StatusWordError):
        return "in_flight"
    return "failed"


def _document(job_id: Any, station: str, state: str, *, steps: list | None = None, error: dict | None = None,
              trace: list | None = None, started_at: float, reason: str | None = None) -> dict:
    steps = steps or []
    if reason is not None and error is not None:
        error["reason"] = reason
    return {"v": protocol.PROTOCOL_VERSION, "job_id": job_id if isinstance(job_id, str) else None,
            "station": station, "state": state, "steps": steps,
            "steps_done": sum(1 for s in steps if s["status"] == "done"),
            "stage": steps[-1]["op"] if steps else None, "error": error, "trace": trace or [],
            "started_at": round(started_at, 3), "finished_at": round(time.time(), 3)}


def _refused(job_id: Any, station: str, exc: protocol.ProtocolError, started_at: float) -> dict:
    error = {"step": None, "op": None, "apdu": None, "sw": None, "meaning": None, "kind": "ProtocolError",
             "message": str(exc), "authentication": False}
    return _document(job_id, station, "refused", error=error, started_at=started_at, reason=exc.reason)


def failure_result(envelope: Any, identity: Identity, exc: BaseException, started_at: float) -> dict:
    """A signed "failed" result for a fault outside any step (a bug, a reader that vanished), so the CMS
    always hears back; the message names the exception type, never data."""
    job_id = envelope.get("job_id") if isinstance(envelope, Mapping) else None
    error = {"step": None, "op": None, "apdu": None, "sw": None, "meaning": None, "kind": type(exc).__name__,
             "message": f"agent fault: {type(exc).__name__}", "authentication": False}
    document = _document(job_id, identity.station, "failed", error=error, started_at=started_at)
    return protocol.sign_with(document, identity.sign_private_key)


def run_steps(steps: list, transport, keys: Mapping[str, bytearray], *, chip_type: str,
              kdd: bytes | None = None) -> dict:
    """Run the steps once each on `transport`; the unsigned result fields (state, steps, error, trace).

    `kdd`: the job card's GP KDD; an INITIALIZE UPDATE answer with another one stops the script.
    """
    tracing = TracingTransport(transport)
    redactor = _Redactor(tracing, expect_kdd=kdd)
    run = _Run(redactor, keys, chip_type)
    done: list[dict] = []
    trace: list[dict] = []
    state, error = "succeeded", None
    try:
        for index, step in enumerate(steps):
            op = step["op"]
            entry: dict = {"index": index, "op": op}
            if "confirms" in step:
                entry["confirms"] = step["confirms"]
            if "label" in step:
                entry["label"] = step["label"]
            mark, sent_before = len(tracing.entries), tracing.commands_sent
            redactor.on = op in REDACTED_OPS or (op in ("raw", "gp.store_data") and bool(step.get("redact")))
            try:
                observed = HANDLERS[op](run, step)
            except Exception as exc:  # every failure, even a bug, ends the script with a result
                entry["status"] = _step_status(op, exc, tracing.commands_sent > sent_before)
                state = "interrupted" if isinstance(exc, CardRemovedError | TransportError) else "failed"
                error = _error(index, op, exc, tracing.entries)
                done.append(entry)
                break
            finally:
                redactor.on = False
                trace += [{"step": index, **e.as_dict()} for e in tracing.entries[mark:]]
            entry["status"] = "done"
            if observed:
                entry["observed"] = observed
            done.append(entry)
    finally:
        run.close()
    return {"state": state, "steps": done, "error": error, "trace": trace}


def _envelope_kdd(card: Mapping) -> bytes | None:
    """The job card's KDD (10 bytes) if the envelope names one."""
    text = card.get("kdd")
    if text in (None, ""):
        return None
    try:
        kdd = bytes.fromhex(str(text))
    except ValueError:
        kdd = b""
    if len(kdd) != 10:
        raise protocol.ProtocolError("malformed", "card.kdd must be 10 bytes of hex")
    return kdd


def admit(envelope: Any, *, identity: Identity, ledger: ReplayLedger,
          now: float | None = None) -> dict | None:
    """The checks that need no card, in this order: the envelope is authentic and whole (signature with the
    CMS key version it names, station, script digest and vocabulary); the replay ledger claims the job id
    (atomic across processes sharing the agent home), checking the expiry of a job id it never saw.

    None when the job is admitted: it is claimed as running, and the caller runs it (`execute` with
    `admitted=True`) or records how it ended (`ledger.finish`). Otherwise the signed refusal. The ledger
    comes before the expiry: a copy of a job this station already received is a replay whatever the time
    (taken as "expired" it ended at the CMS a job whose first copy had changed the card).
    """
    started = time.time()
    station = identity.station
    job_id = envelope.get("job_id") if isinstance(envelope, Mapping) else None
    sign = identity.sign_private_key
    try:
        version = envelope.get("signing_key_version") if isinstance(envelope, Mapping) else None
        cms_key = identity.cms_public_key(version) if isinstance(version, int) else None
        if cms_key is None:
            raise protocol.ProtocolError("signature", f"job signed with CMS key version {version!r}; this "
                                         f"station knows versions {sorted(identity.cms_signing_keys)}")
        protocol.check_envelope(envelope, station=station, cms_public_key=cms_key, now=now, expiry=False)
        if not isinstance(job_id, str) or not job_id:
            raise protocol.ProtocolError("malformed", "job_id must be a non-empty string")
        if len(envelope["script"]["steps"]) > MAX_STEPS:
            raise protocol.ProtocolError("malformed", f"script has more than {MAX_STEPS} steps")
    except protocol.ProtocolError as exc:
        return protocol.sign_with(_refused(job_id, station, exc, started), sign)

    card = envelope.get("card") if isinstance(envelope.get("card"), Mapping) else {}
    try:
        claimed = ledger.claim(job_id, card_uid=str(card.get("uid", "")), expires_at=envelope["expires_at"],
                               check=lambda: protocol.check_expiry(envelope, now))
    except protocol.ProtocolError as exc:  # expired, and never received before: nothing recorded
        return protocol.sign_with(_refused(job_id, station, exc, started), sign)
    if not claimed:
        exc = protocol.ProtocolError("replay", f"job {job_id} was already received by this station "
                                     f"(state {ledger.state(job_id)}); not run again")
        return protocol.sign_with(_refused(job_id, station, exc, started), sign)
    return None


def execute(envelope: Any, transport, *, identity: Identity, ledger: ReplayLedger,
            card_uid: str | None = None, now: float | None = None, admitted: bool = False) -> dict:
    """Check, run and sign one job. `card_uid` is the UID read from the card in the reader (hex).

    `admitted`: `admit` already passed for this envelope (the job is claimed in the ledger)."""
    if not admitted:
        refusal = admit(envelope, identity=identity, ledger=ledger, now=now)
        if refusal is not None:
            return refusal
    started = time.time()
    station = identity.station
    job_id = envelope["job_id"]
    sign = identity.sign_private_key
    card = envelope.get("card") if isinstance(envelope.get("card"), Mapping) else {}

    state = "refused"
    try:
        try:
            want = str(card.get("uid", "")).upper()
            if card_uid is not None and card_uid.upper() != want:
                raise protocol.ProtocolError("card", f"the card in the reader ({card_uid.upper()}) is not "
                                             f"the job's card ({want})")
            kdd = _envelope_kdd(card)
            keys = protocol.open_keys(envelope.get("sealed_keys"), private_key=identity.hpke_private_key,
                                      job_id=job_id, station=station, expires_at=envelope["expires_at"])
        except protocol.ProtocolError as exc:
            return protocol.sign_with(_refused(job_id, station, exc, started), sign)
        try:
            missing = sorted(set(protocol.check_script(envelope["script"])) - keys.keys())
            if missing:
                exc = protocol.ProtocolError("unknown_ref", "the script names key refs not in the sealed "
                                             f"keys: {missing}")
                return protocol.sign_with(_refused(job_id, station, exc, started), sign)
            outcome = run_steps(envelope["script"]["steps"], transport, keys,
                                chip_type=str(card.get("chip_type", "")), kdd=kdd)
        finally:
            protocol.wipe_keys(keys)
        state = outcome["state"]
        document = _document(job_id, station, state, steps=outcome["steps"], error=outcome["error"],
                             trace=outcome["trace"], started_at=started)
        return protocol.sign_with(document, sign)
    finally:
        ledger.finish(job_id, state)
