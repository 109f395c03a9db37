"""Benchmark: SCP03 session open + 100 wrapped APDUs, our host vs yubikit's, same virtual JCOP (prints only).

Both hosts SELECT the ISD, open SCP03 at security level 0x33 (C-MAC, C-DEC,
R-MAC, R-ENC) with the GP default keys, then send 100 identical STORE DATA
commands (CLA 84, P1 90: one BER-TLV of 32 bytes) that the card decrypts and
answers with an R-MAC. Measured in process (the host calls the card) and
through pyscard -> pcscd -> vpcd -> the bridge (`ykman.pcsc` for yubikit).
The ratio yubikit/ours above 1 means ours is faster.

Run: .venv/bin/python -m bench.scp03 [--repeat 5] [--commands 100]
"""
from __future__ import annotations

import argparse
import statistics
import time

from yubikit.core import TRANSPORT, Tlv
from yubikit.core.smartcard import SmartCardConnection
from yubikit.core.smartcard import scp as yk
from yubikit.securitydomain import SecurityDomainSession

from bench.pcsc import in_reader
from cardproto.apdu import CommandAPDU
from cardproto.gp import commands as gp
from cardproto.gp import scp03
from cardproto.keys import StaticKeys
from cardsim.jcop import JCOP4Card
from tests.support.pcsc import PcscUnavailable, shared_pcscd

GP_DEFAULT = bytes(range(0x40, 0x50))
KVN = 0x30
DATA = bytes(Tlv(0x42, bytes(range(32))))


class InProcess(SmartCardConnection):
    """yubikit's connection interface straight onto the virtual card."""

    def __init__(self, card) -> None:
        self.card = card

    @property
    def transport(self) -> TRANSPORT:
        return TRANSPORT.NFC

    def close(self) -> None:
        pass

    def send_and_receive(self, apdu: bytes) -> tuple[bytes, int]:
        answer = self.card.transmit(bytes(apdu))
        return answer[:-2], int.from_bytes(answer[-2:], "big")


def ykman_connection(reader_name: str) -> SmartCardConnection:
    """A second PC/SC handle on the same reader, opened the way ykman opens one."""
    from smartcard.System import readers
    from ykman.pcsc import ScardSmartCardConnection

    return ScardSmartCardConnection(next(r for r in readers() if str(r) == reader_name).createConnection())


def ours(transport, commands: int) -> tuple[float, float]:
    start = time.perf_counter()
    gp.select(transport, gp.ISD_AID)
    channel = scp03.open_channel(transport, StaticKeys.single(GP_DEFAULT, kvn=KVN), 0x33, sd_aid=gp.ISD_AID)
    opened = time.perf_counter()
    for _ in range(commands):
        channel.send(CommandAPDU(0x80, 0xE2, 0x90, 0x00, DATA), command="STORE DATA")
    done = time.perf_counter()
    channel.close()
    return opened - start, done - opened


def yubikits(connection: SmartCardConnection, commands: int) -> tuple[float, float]:
    start = time.perf_counter()
    session = SecurityDomainSession(connection)  # SELECT ISD
    session.authenticate(yk.Scp03KeyParams(yk.KeyRef(0x01, KVN), yk.StaticKeys.default()))
    opened = time.perf_counter()
    for _ in range(commands):
        session.protocol.send_apdu(0x80, 0xE2, 0x90, 0x00, DATA)
    return opened - start, time.perf_counter() - opened


def compare(run_ours, run_yubikit, repeat: int, commands: int) -> None:
    """Runs both hosts alternately (so machine load hits both alike) and prints medians, bests, ratio."""
    results: dict[str, list[tuple[float, float]]] = {"cardproto (ours)": [], "yubikit": []}
    for _ in range(repeat):
        results["cardproto (ours)"].append(run_ours())
        results["yubikit"].append(run_yubikit())
    totals = {}
    for label, runs in results.items():
        opens = [o * 1e3 for o, _ in runs]
        cmds = [c * 1e3 for _, c in runs]
        sums = [o + c for o, c in zip(opens, cmds, strict=True)]
        totals[label] = (statistics.median(sums), min(sums))
        print(f"  {label:18s} open {statistics.median(opens):7.2f} ms ({min(opens):.2f})  "
              f"{commands} APDUs {statistics.median(cmds):8.1f} ms ({min(cmds):.1f})  "
              f"total {statistics.median(sums):8.1f} ms ({min(sums):.1f})")
    (ours_median, ours_best), (yk_median, yk_best) = totals.values()
    print(f"  ratio yubikit/ours: {yk_median / ours_median:.2f} on medians, "
          f"{yk_best / ours_best:.2f} on bests "
          "(above 1: ours is faster)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--commands", type=int, default=100)
    args = parser.parse_args()
    n = args.commands
    print(f"SCP03 S8 level 0x33: SELECT + INITIALIZE UPDATE + EXTERNAL AUTHENTICATE, then {n} STORE DATA "
          f"(32-byte TLV, C-MAC+C-DEC, R-MAC); {args.repeat} runs; median (best)")
    card = JCOP4Card(seed="bench")
    print(" in process")
    compare(lambda: ours(card, n), lambda: yubikits(InProcess(card), n), args.repeat, n)
    try:
        with shared_pcscd() as pcscd, in_reader(card, pcscd) as (transport, reader_name):
            print(" through pcscd + vpcd (ours: PyscardTransport; yubikit: ykman.pcsc connection)")
            connection = ykman_connection(reader_name)
            try:
                compare(lambda: ours(transport, n), lambda: yubikits(connection, n), args.repeat, n)
            finally:
                connection.close()
    except PcscUnavailable as exc:
        print(f" through pcscd: not measured ({exc})")


if __name__ == "__main__":
    main()
