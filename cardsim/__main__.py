"""Run a virtual card in a vpcd reader slot: `python -m cardsim --card desfire-ev2 --state card.json`."""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from .registry import CARD_TYPES, CardTypeUnavailable, StateMismatch, UnknownCardType, open_card
from .vpcd import VPCD_PORT, NotSeen, SlotBusy, VpcdBridge


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m cardsim",
        description="Insert a virtual card into pcscd's vpcd reader (reader slot N listens on port + N).")
    parser.add_argument("--card", required=True, choices=sorted(CARD_TYPES), help="card type")
    parser.add_argument("--state", help="JSON state file: loaded if it exists, saved after every command")
    parser.add_argument("--host", default="127.0.0.1", help="where vpcd listens (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=VPCD_PORT, help=f"vpcd base port (default {VPCD_PORT})")
    parser.add_argument("--reader-slot", type=int, default=0, metavar="N",
                        help="vpcd reader slot (default 0)")
    parser.add_argument("--remove-after", type=int, metavar="N",
                        help="fault: leave the reader instead of answering APDU number N (0-based)")
    parser.add_argument("--reinsert-after", type=float, metavar="SECONDS",
                        help="after such a removal, put the card back after SECONDS (default: exit)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    if args.reader_slot < 0:
        parser.error("--reader-slot must be 0 or more")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="cardsim: %(message)s")
    try:
        card = open_card(args.card, args.state)
    except (UnknownCardType, CardTypeUnavailable, StateMismatch, ValueError) as exc:
        print(f"cardsim: {exc}", file=sys.stderr)
        return 2
    if args.remove_after is not None:
        card.faults.remove_after = card.apdu_count + args.remove_after
    port = args.port + args.reader_slot
    bridge = VpcdBridge(card, port, args.host)
    done = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: done.set())
    try:
        bridge.start(wait=False)
    except SlotBusy as exc:
        print(f"cardsim: {exc}", file=sys.stderr)
        return 3
    print(f"cardsim: {card!r} inserted at {args.host}:{port}"
          + (f", state in {args.state}" if args.state else ""), flush=True)
    try:
        bridge.wait_seen(timeout=10)
        print("cardsim: pcscd has seen the card", flush=True)
    except NotSeen as exc:
        print(f"cardsim: {exc} (still waiting)", file=sys.stderr, flush=True)
    try:
        while not done.wait(0.2):
            if bridge.wants_insertion:
                continue
            # The fault plan took the card out.
            print(f"cardsim: card removed by the fault plan ({'; '.join(card.faults.log)})", flush=True)
            if args.reinsert_after is None:
                break
            if done.wait(args.reinsert_after):
                break
            bridge.insert(wait=False)
            print("cardsim: card put back", flush=True)
    finally:
        bridge.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
