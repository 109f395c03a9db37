"""Benchmark: DESFire EV2 authenticate + 100 full-mode commands, in process and through pcscd (prints only).

The workload is bench/desfire.py's (AuthenticateEV2First, then WriteData and
ReadData of 32 bytes in CommMode.Full, alternating) on the same virtual card:
once called directly, once through pyscard -> pcscd -> vpcd -> the vpcd
bridge, and once more through pcscd with the card's JSON state file attached
(what `python -m cardsim --state` does: a save after every command). The
difference is the price of the real PC/SC stack. Uses the machine's pcscd
(or starts one the way the test fixture does, and stops it afterwards).

Run: .venv/bin/python -m bench.pcsc [--repeat 5] [--commands 100]
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bench.desfire import _counter_bytes, prepare, workload
from cardproto.transport import PyscardTransport
from cardsim.base import VirtualCard
from cardsim.desfire import DESFireCard
from cardsim.vpcd import NotSeen, SlotBusy, VpcdBridge
from tests.support.pcsc import Pcscd, PcscUnavailable, shared_pcscd


@contextlib.contextmanager
def in_reader(card: VirtualCard, pcscd: Pcscd) -> Iterator[tuple[PyscardTransport, str]]:
    """`card` in the first free vpcd reader: a pyscard transport and the reader name; out at the end."""
    from smartcard.System import readers

    deadline = time.monotonic() + 300
    bridge = None
    while bridge is None:
        for port in pcscd.ports:
            candidate = VpcdBridge(card, port)
            try:
                bridge = candidate.start(timeout=10)
                break
            except (SlotBusy, NotSeen):
                continue
        if bridge is None:
            if time.monotonic() > deadline:
                raise PcscUnavailable(f"every vpcd reader {pcscd.ports} stayed busy for 300 s")
            time.sleep(0.5)
    try:
        reader = next(r for r in readers() if str(r) == pcscd.reader_name(bridge.port))
        deadline = time.monotonic() + 10
        while True:
            try:
                connection = reader.createConnection()
                connection.connect()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)  # pcscd may list the card a poll after vpcd handed it over
        try:
            yield PyscardTransport(connection), str(reader)
        finally:
            connection.disconnect()
    finally:
        bridge.stop()


def runs(transport_for, repeat: int, commands: int) -> list[tuple[float, float]]:
    return [workload(transport_for(), "ev2", commands, seed=n) for n in range(repeat)]


def report(label: str, results: list[tuple[float, float]], commands: int) -> float:
    auth = [a * 1e3 for a, _ in results]
    cmds = [c * 1e3 for _, c in results]
    per_cmd = statistics.median(cmds) / commands
    print(f"  {label:34s} auth {statistics.median(auth):7.2f} ms ({min(auth):.2f})  "
          f"{commands} cmds {statistics.median(cmds):8.1f} ms ({min(cmds):.1f})  "
          f"= {per_cmd:.3f} ms/cmd, {1000 / per_cmd:6.0f} cmds/s")
    return statistics.median(cmds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--commands", type=int, default=100)
    args = parser.parse_args()
    print(f"DESFire EV2 card, EV2 secure messaging: AuthenticateEV2First + {args.commands} CommMode.Full "
          f"commands (WriteData/ReadData 32 bytes), {args.repeat} runs; median (best)")

    card = DESFireCard("ev2", rng=_counter_bytes(1000))
    prepare(card, "ev2")
    direct = report("in process", runs(lambda: card, args.repeat, args.commands), args.commands)
    try:
        with shared_pcscd() as pcscd:
            with in_reader(card, pcscd) as (transport, _):
                piped = report("through pcscd + vpcd", runs(lambda: transport, args.repeat, args.commands),
                               args.commands)
            with tempfile.TemporaryDirectory() as tmp:
                card.attach_state_file(Path(tmp) / "card.json")
                with in_reader(card, pcscd) as (transport, _):
                    saved = report("through pcscd, state file saved", runs(lambda: transport, args.repeat,
                                                                          args.commands), args.commands)
                card.state_path = None
    except PcscUnavailable as exc:
        print(f"  through pcscd: not measured ({exc})")
        return
    print(f"  pcscd costs {piped / direct:.1f}x the in-process time "
          f"({(piped - direct) / args.commands:.3f} ms more per command); "
          f"saving the state file adds {(saved - piped) / args.commands:.3f} ms per command")


if __name__ == "__main__":
    main()
