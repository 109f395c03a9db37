"""Benchmark: DESFire EV2 authenticate + 100 full-mode commands on the virtual card (prints, never asserts).

In-process always; through pcscd + vpcd when `cardsim.vpcd` and a running pcscd are
available (the bridge is built separately; without it that half is reported as skipped).
Run: .venv/bin/python -m bench.desfire
"""
from __future__ import annotations

import time

from cardproto.desfire import AccessRights, CommMode, DESFire, KeyType
from cardsim.desfire import DESFireCard

AID = bytes.fromhex("B0B1B2")
ROUNDS = 100


def prepare(card: DESFireCard) -> None:
    df = DESFire(card)
    df.create_application(AID, 0x0F, 2, KeyType.AES)
    df.select_application(AID)
    df.authenticate_ev2_first(0, bytearray(16))
    df.create_std_data_file(1, CommMode.FULL, AccessRights(read=1, write=1, read_write=1, change=0), 64)


def run(transport) -> tuple[float, float]:
    df = DESFire(transport)
    df.select_application(AID)
    start = time.perf_counter()
    df.authenticate_ev2_first(1, bytearray(16))
    auth_s = time.perf_counter() - start
    payload = bytes(range(32))
    start = time.perf_counter()
    for n in range(ROUNDS):
        if n % 2:
            df.read_data(1, 0, 32, CommMode.FULL)
        else:
            df.write_data(1, 0, payload, CommMode.FULL)
    return auth_s, time.perf_counter() - start


def main() -> None:
    card = DESFireCard("ev2")
    prepare(card)
    auth_s, cmds_s = run(card)
    print(f"in-process  EV2 auth {auth_s * 1e3:7.2f} ms; {ROUNDS} full-mode Write/ReadData "
          f"{cmds_s * 1e3:8.1f} ms ({cmds_s / ROUNDS * 1e3:.2f} ms each)")
    try:
        from cardsim import vpcd  # noqa: F401 - built by the vpcd bridge work
    except ImportError:
        print("through pcscd: skipped (cardsim.vpcd is not available yet)")
        return
    print("through pcscd: see tests/support/pcsc.py fixtures; not wired here yet")


if __name__ == "__main__":
    main()
