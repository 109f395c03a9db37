"""What every virtual card is: an ATR, an APDU handler, power events, JSON state, faults."""
from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path


class CardRemoved(Exception):
    """Raised by a fault plan to make the bridge drop the connection (the card leaves the field)."""


class VirtualCard:
    """Base class. Subclasses implement `process`, `to_state` and `from_state`.

    `transmit` is what the bridge and in-process tests call: it applies the
    fault plan, counts commands per INS (so a test can prove that an
    authentication was sent exactly once) and serialises access.
    """

    kind: str = "base"
    atr: bytes = bytes.fromhex("3B8080010101")

    def __init__(self) -> None:
        self.faults = FaultPlan()
        self.ins_counts: dict[int, int] = {}
        self.apdu_count = 0
        self.state_path: Path | None = None
        self._saved_state: str | None = None
        self._lock = threading.RLock()

    # -- card side -------------------------------------------------------
    def process(self, apdu: bytes) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError

    def power_on(self) -> None:
        """Cold or warm reset: clear volatile state (selection, sessions)."""

    def power_off(self) -> None:
        self.power_on()

    # -- framing and faults ------------------------------------------------
    def transmit(self, apdu: bytes) -> bytes:
        with self._lock:
            index = self.apdu_count
            self.apdu_count += 1
            if len(apdu) >= 2:
                self.ins_counts[apdu[1]] = self.ins_counts.get(apdu[1], 0) + 1
            self.faults.before(index)
            response = self.process(bytes(apdu))
            response = self.faults.after(index, response)
            self.save()
            return response

    # -- persistence -------------------------------------------------------
    def to_state(self) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def load_state(self, state: dict) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def attach_state_file(self, path: str | os.PathLike) -> None:
        """Load from `path` if it exists, and save there after every command."""
        self.state_path = Path(path)
        self._saved_state = None
        if self.state_path.exists():
            self.load_state(json.loads(self.state_path.read_text()))
        else:
            self.save()

    def save(self) -> None:
        if self.state_path is None:
            return
        data = json.dumps({"kind": self.kind, **self.to_state()}, indent=1, sort_keys=True)
        if data == self._saved_state and self.state_path.exists():
            return  # the command changed nothing the card keeps (a read, a status query): no write
        # Atomic replace: a reader of the file never sees half a state.
        fd, tmp = tempfile.mkstemp(dir=self.state_path.parent, prefix=".card-")
        with os.fdopen(fd, "w") as handle:
            handle.write(data)
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.state_path)
        self._saved_state = data


@dataclass
class FaultPlan:
    """Faults to inject, by APDU index (0-based, counted since the card was made).

    - remove_after: raise CardRemoved instead of answering APDU n (the command
      is *not* executed: the field dropped before the card processed it) ...
    - remove_after_executing: ... or after executing it, before the answer
      leaves (the card changed state but the host never heard).
    - corrupt_next_mac: flip a bit in the last byte before SW of the next answer
      that has data (a MAC or cryptogram the host must reject).
    - delay_s: sleep before every answer.
    - tear_write_at: a callable hook for cards to tear a write mid-way (the card
      decides what "mid-way" means; see DESFire backup files).
    """

    remove_after: int | None = None
    remove_after_executing: int | None = None
    corrupt_next_mac: bool = False
    delay_s: float = 0.0
    tear_next_write: bool = False
    log: list[str] = field(default_factory=list)

    def before(self, index: int) -> None:
        if self.remove_after is not None and index >= self.remove_after:
            self.log.append(f"removed before APDU {index}")
            raise CardRemoved(index)
        if self.delay_s:
            time.sleep(self.delay_s)

    def after(self, index: int, response: bytes) -> bytes:
        if self.remove_after_executing is not None and index >= self.remove_after_executing:
            self.log.append(f"removed after executing APDU {index}")
            raise CardRemoved(index)
        if self.corrupt_next_mac and len(response) > 2:
            self.corrupt_next_mac = False
            self.log.append(f"corrupted answer to APDU {index}")
            return response[:-3] + bytes((response[-3] ^ 0x01,)) + response[-2:]
        return response
