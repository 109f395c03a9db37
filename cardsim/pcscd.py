"""pcscd with the vpcd driver for virtual cards, shared by everything on this machine that needs one.

`shared_pcscd()` reuses a running pcscd that offers "Virtual PCD" readers, or starts its own
`pcscd --foreground` (eight vpcd readers, see OWN_DEVICES; through `sudo -n` when not root) and
stops it by pid when its last user is done. Users (pytest processes and xdist workers, bench/
scripts, `manage.py runstack` with its demo) are counted in a JSON file under an flock in the
temp directory, so a stack and a test session on one machine share one pcscd instead of
fighting over the vpcd ports. No Django and no pytest here: the test fixtures
(tests/support/pcsc.py) and the runtime stack (cms/stack.py) both build on this module.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .vpcd import VPCD_PORT, port_in_use

TMP = Path(tempfile.gettempdir())
LOCK_FILE = TMP / "cms-pcscd.lock"
STATE_FILE = TMP / "cms-pcscd.json"
LOG_FILE = TMP / "cms-pcscd.log"
OWN_CONF_DIR = TMP / "cms-pcscd-reader.conf.d"
VPCD_DRIVER = Path("/usr/lib/pcsc/drivers/serial/libifdvpcd.so")
READER_PREFIX = "Virtual PCD"
SETUP_HINT = "run bin/setup (it installs pcscd, vsmartcard-vpcd, libpcsclite-dev and swig)"


class PcscUnavailable(RuntimeError):
    """pcscd or its vpcd readers cannot be had on this machine."""


# Our own pcscd gets four vpcd devices of two slots each: ports 35963..35970, reader N on 35963 + N,
# so several test sessions on this machine rarely wait for a free reader. libifdvpcd keeps its slots
# in one static array indexed by slot number, so devices sharing one loaded driver overwrite each
# other's slots (seen here: pcscd then reads one reader from another's socket and stops taking
# cards); each extra device therefore loads its own copy of the driver file (a separate dlopen).
OWN_DEVICES = 4
SLOTS_PER_DEVICE = 2
DRIVER_COPIES = TMP / "cms-pcscd-drivers"


def _device_name(device: int) -> str:
    # Distinct names: pcscd gives equal FRIENDLYNAMEs equal reader names.
    return READER_PREFIX if device == 0 else f"{READER_PREFIX} {chr(ord('A') + device)}"


def _driver_path(device: int) -> Path:
    return VPCD_DRIVER if device == 0 else DRIVER_COPIES / f"libifdvpcd-{device}.so"


def own_reader_conf() -> tuple[str, dict[int, str]]:
    """reader.conf text for OWN_DEVICES vpcd devices, and the reader name of each port."""
    entries, names = [], {}
    for device in range(OWN_DEVICES):
        channel = VPCD_PORT + device * SLOTS_PER_DEVICE
        entries.append(f'FRIENDLYNAME "{_device_name(device)}"\nDEVICENAME   /dev/null:0x{channel:04X}\n'
                       f"LIBPATH      {_driver_path(device)}\nCHANNELID    0x{channel:04X}\n")
        for slot in range(SLOTS_PER_DEVICE):
            names[channel + slot] = f"{_device_name(device)} 00 {slot:02X}"
    return "\n".join(entries), names


def default_reader_names() -> dict[int, str]:
    """The reader names of the packaged /etc/reader.conf.d/vpcd (one device, two slots)."""
    return {VPCD_PORT + slot: f"{READER_PREFIX} 00 {slot:02X}" for slot in range(SLOTS_PER_DEVICE)}



def virtual_readers() -> list[str]:
    """Names of the vpcd readers pcscd offers now ([] when pcscd is not running)."""
    try:
        from smartcard.System import readers
    except ImportError:
        raise PcscUnavailable(f"pyscard is not installed: {SETUP_HINT}") from None
    try:
        return [str(r) for r in readers() if str(r).startswith(READER_PREFIX)]
    except Exception:  # noqa: BLE001 - pyscard raises its own types when no pcscd answers
        return []


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_pcscd(pid: int, own: bool = False) -> bool:
    """Whether `pid` is a pcscd (with `own`, the one _start_pcscd started, sudo in front or not). A pid read
    from a file may since have been given to another program: it is never signalled on trust."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    named = any(Path(os.fsdecode(part)).name == "pcscd" for part in argv)
    return named and (not own or os.fsencode(OWN_CONF_DIR) in argv)


def _running_pcscd_pid() -> int | None:
    with contextlib.suppress(OSError, ValueError):
        pid = int(Path("/run/pcscd/pcscd.pid").read_text().split()[0])
        if _is_pcscd(pid):
            return pid
    return None


@contextlib.contextmanager
def _machine_lock() -> Iterator[None]:
    with open(LOCK_FILE, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read_state() -> dict:
    with contextlib.suppress(OSError, ValueError):
        return json.loads(STATE_FILE.read_text())
    return {"pid": None, "users": []}


def _write_state(state: dict) -> None:
    STATE_FILE.write_text(json.dumps(state))


def _start_pcscd() -> int:
    if shutil.which("pcscd") is None:
        raise PcscUnavailable(f"pcscd is not installed: {SETUP_HINT}")
    if not VPCD_DRIVER.exists():
        raise PcscUnavailable(f"the vpcd driver ({VPCD_DRIVER}) is not installed: {SETUP_HINT}")
    OWN_CONF_DIR.mkdir(exist_ok=True)
    DRIVER_COPIES.mkdir(exist_ok=True)
    for device in range(1, OWN_DEVICES):
        # A fresh file each time (copy, then rename): never rewrite a driver a pcscd may have mapped.
        partial = _driver_path(device).with_suffix(".partial")
        shutil.copyfile(VPCD_DRIVER, partial)
        os.replace(partial, _driver_path(device))
    (OWN_CONF_DIR / "vpcd").write_text(own_reader_conf()[0])
    command = ["pcscd", "--foreground", "--config", str(OWN_CONF_DIR)]
    if os.geteuid() != 0:
        command = ["sudo", "-n", *command]
    with open(LOG_FILE, "ab") as log:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    return process.pid


def _stop_pcscd(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap it if this process started it
        if not _is_pcscd(pid, own=True):  # gone (a zombie's cmdline is empty too)
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


@dataclass
class Pcscd:
    """The pcscd in use. `pid` is set only when shared_pcscd started it (its last user stops it).

    `names` maps each vpcd port to its reader name (reader N listens on base_port + N).
    """

    pid: int | None
    names: dict[int, str]
    base_port: int = VPCD_PORT

    @property
    def readers(self) -> list[str]:
        return list(self.names.values())

    @property
    def ports(self) -> list[int]:
        return sorted(self.names)

    def reader_name(self, port: int) -> str:
        try:
            return self.names[port]
        except KeyError:
            raise PcscUnavailable(f"pcscd offers no vpcd reader on port {port} (readers: {self.names})") \
                from None


@contextlib.contextmanager
def shared_pcscd(timeout: float = 15.0) -> Iterator[Pcscd]:
    """Use the machine's pcscd with vpcd readers, starting one if none runs; the last user of a
    pcscd started here stops it. For the test fixtures, bench/ scripts and `manage.py runstack`."""
    me = os.getpid()
    with _machine_lock():
        state = _read_state()
        state["users"] = [pid for pid in state.get("users", []) if _pid_alive(pid) and pid != me]
        if state.get("pid") and not _is_pcscd(state["pid"], own=True):
            state["pid"] = None
        if not state.get("pid") and _running_pcscd_pid() is None:
            state["pid"] = _start_pcscd()
        state["users"].append(me)
        _write_state(state)
        owned = state.get("pid")
    expected = own_reader_conf()[1] if owned else default_reader_names()
    try:
        deadline = time.monotonic() + timeout
        names = virtual_readers()
        while not names and time.monotonic() < deadline:
            time.sleep(0.2)
            names = virtual_readers()
        if not names:
            running = _running_pcscd_pid()
            raise PcscUnavailable(
                f"pcscd offers no {READER_PREFIX!r} readers after {timeout:.0f} s "
                + (f"(pcscd pid {running} runs without the vpcd driver?) " if running else
                   f"(pcscd did not start; see {LOG_FILE}) ")
                + f"-- {SETUP_HINT}")
        offered = {port: name for port, name in expected.items() if name in names}
        if not offered:
            raise PcscUnavailable(f"pcscd offers readers {names}, none named as expected "
                                  f"({list(expected.values())})")
        yield Pcscd(pid=owned, names=offered)
    finally:
        with _machine_lock():
            state = _read_state()
            state["users"] = [pid for pid in state.get("users", []) if pid != me and _pid_alive(pid)]
            if not state["users"] and state.get("pid") and _is_pcscd(state["pid"], own=True):
                _stop_pcscd(state["pid"])
                state["pid"] = None
            _write_state(state)


def free_ports(pcscd: Pcscd, count: int) -> list[int]:
    """`count` vpcd ports no card holds right now (for `python -m cardsim` children); [] if too few."""
    free = [port for port in pcscd.ports if not port_in_use(port)]
    return free[:count] if len(free) >= count else []
