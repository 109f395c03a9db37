"""Benchmark: DESFire authenticate + 100 full-mode commands against the virtual card in process (prints only).

For each secure messaging (EV2 on EV2 and EV3 cards, EV1 AES for comparison) it
times one authentication and then 100 CommMode.Full commands (WriteData and
ReadData of 32 bytes, alternating), repeated, and prints the median and the
best run. A second pass replays the recorded card answers to the same host
(fixed RndA and RndB make the exchange identical), which gives the host's
share of the time without the virtual card's. The same workload through
pcscd + vpcd is measured in bench/pcsc.py.

Run: .venv/bin/python -m bench.desfire [--repeat 7] [--commands 100]
"""
from __future__ import annotations

import argparse
import statistics
import time

from cardproto.desfire import AccessRights, CommMode, DESFire, KeyType
from cardsim.desfire import DESFireCard

AID = bytes.fromhex("B0B1B2")
PAYLOAD = bytes(range(32))
SETUPS = [  # label, card flavour, authentication
    ("EV2 card, EV2 secure messaging", "ev2", "ev2"),
    ("EV3 card, EV2 secure messaging", "ev3", "ev2"),
    ("EV2 card, EV1 AES secure messaging", "ev2", "aes"),
]


def _counter_bytes(seed: int):
    """A deterministic random source, so a recorded exchange can be replayed byte for byte."""
    state = {"n": seed}

    def take(n: int) -> bytes:
        state["n"] += 1
        return (state["n"].to_bytes(4, "big") * ((n + 3) // 4))[:n]

    return take


def _authenticate(df: DESFire, how: str, key_no: int) -> None:
    if how == "ev2":
        df.authenticate_ev2_first(key_no, bytearray(16))
    else:
        df.authenticate_aes(key_no, bytearray(16))


def prepare(card: DESFireCard, how: str) -> None:
    df = DESFire(card)
    df.create_application(AID, 0x0F, 2, KeyType.AES)
    df.select_application(AID)
    _authenticate(df, how, 0)
    df.create_std_data_file(1, CommMode.FULL, AccessRights(read=1, write=1, read_write=1, change=0), 64)


class Recorder:
    def __init__(self, inner) -> None:
        self.inner, self.answers = inner, []

    def transmit(self, apdu: bytes) -> bytes:
        answer = self.inner.transmit(apdu)
        self.answers.append(answer)
        return answer


class Replay:
    def __init__(self, answers: list[bytes]) -> None:
        self.answers, self.index = answers, 0

    def transmit(self, apdu: bytes) -> bytes:
        answer = self.answers[self.index]
        self.index += 1
        return answer


def workload(transport, how: str, commands: int, seed: int) -> tuple[float, float]:
    """(authentication seconds, seconds for `commands` full-mode commands)."""
    df = DESFire(transport, random_bytes=_counter_bytes(seed))
    df.select_application(AID)
    start = time.perf_counter()
    _authenticate(df, how, 1)
    auth_s = time.perf_counter() - start
    start = time.perf_counter()
    for n in range(commands):
        if n % 2:
            df.read_data(1, 0, 32, CommMode.FULL)
        else:
            df.write_data(1, 0, PAYLOAD, CommMode.FULL)
    return auth_s, time.perf_counter() - start


def measure(flavour: str, how: str, repeat: int, commands: int) -> dict:
    card = DESFireCard(flavour, rng=_counter_bytes(1000))
    prepare(card, how)
    live, host = [], []
    for run in range(repeat):
        card.rng = _counter_bytes(5000 + run)
        recorder = Recorder(card)
        live.append(workload(recorder, how, commands, seed=run))
        replay = Replay(recorder.answers)
        host.append(workload(replay, how, commands, seed=run))
        assert replay.index == len(recorder.answers)  # the replay took the same path (a check, not timing)
    return {"live": live, "host": host, "apdus": len(recorder.answers)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--commands", type=int, default=100)
    args = parser.parse_args()
    print(f"DESFire in process: authenticate + {args.commands} CommMode.Full commands "
          f"(WriteData/ReadData 32 bytes), {args.repeat} runs; median (best)")
    for label, flavour, how in SETUPS:
        result = measure(flavour, how, args.repeat, args.commands)
        live_auth = [a * 1e3 for a, _ in result["live"]]
        live_cmds = [c * 1e3 for _, c in result["live"]]
        host_auth = [a * 1e3 for a, _ in result["host"]]
        host_cmds = [c * 1e3 for _, c in result["host"]]
        per_cmd = statistics.median(live_cmds) / args.commands
        print(f"  {label:36s} auth {statistics.median(live_auth):6.2f} ms ({min(live_auth):.2f})  "
              f"{args.commands} cmds {statistics.median(live_cmds):7.1f} ms ({min(live_cmds):.1f})  "
              f"= {per_cmd:.3f} ms/cmd, {1000 / per_cmd:6.0f} cmds/s; {result['apdus']} APDUs")
        print(f"  {'  of which host side (replayed card)':36s} auth {statistics.median(host_auth):6.2f} ms"
              f"           {args.commands} cmds {statistics.median(host_cmds):7.1f} ms")


if __name__ == "__main__":
    main()
