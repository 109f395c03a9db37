"""Benchmark: KEK rotation rewrap of N wrapped keys, Transit batches vs one Transit call per key.

Prints figures, never asserts.

    .venv/bin/python bench/rewrap.py [--keys 1000] [--per-card 4] [--batch 250]

Starts its own throwaway OpenBao with cms.localvault (temp folder, free port), so it needs
no running services. Two figures: the whole tenant rewrap (KV reads and writes included, the
same in both runs) and Transit alone (rewrap of the same ciphertexts in batches vs singly).
"""
from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _free_port_pair() -> int:
    while True:
        with socket.socket() as first, socket.socket() as second:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            try:
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--per-card", type=int, default=4)
    parser.add_argument("--batch", type=int, default=250)
    args = parser.parse_args()

    from cms import localvault

    with tempfile.TemporaryDirectory(prefix="bench-openbao-") as folder:
        instance = localvault.up(folder, port=_free_port_pair(), quiet=True)
        try:
            os.environ.update(VAULT_ADDR=instance.addr, VAULT_TOKEN=instance.cms_token(),
                              DJANGO_SETTINGS_MODULE="cms.settings")
            import django

            django.setup()
            _run(args)
        finally:
            localvault.down(folder)


def _run(args) -> None:
    from keys import keystore, rewrap

    tenant_id = 1
    keystore.ensure_kek(tenant_id)
    cards = max(1, args.keys // args.per_card)
    started = time.perf_counter()
    for card_id in range(cards):
        keystore.wrap_and_store(tenant_id, {
            keystore.card_key_ref(tenant_id=tenant_id, card_id=card_id, slot_id=slot, number=1):
                os.urandom(16)
            for slot in range(args.per_card)})
    total = cards * args.per_card
    print(f"setup: {total} keys on {cards} cards wrapped and stored in {time.perf_counter() - started:.2f}s")

    keystore.rotate_kek(tenant_id)
    started = time.perf_counter()
    batched = rewrap.rewrap_tenant(tenant_id, batch_size=args.batch, raise_min_version=False)
    t_batched = time.perf_counter() - started

    keystore.rotate_kek(tenant_id)
    started = time.perf_counter()
    single = rewrap.rewrap_one_by_one(tenant_id)
    t_single = time.perf_counter() - started

    print(f"tenant rewrap, batch {args.batch}: {batched.blobs_rewrapped} keys, {batched.transit_calls} "
          f"Transit calls, {t_batched:.2f}s")
    print(f"tenant rewrap, one call per key: {single.blobs_rewrapped} keys, {single.transit_calls} Transit "
          f"calls, {t_single:.2f}s")
    print(f"ratio (one-by-one / batched), whole rewrap incl. KV I/O: {t_single / t_batched:.1f}x")

    # Transit alone: the same ciphertexts, no KV traffic
    items = []
    for card_id in range(cards):
        fields, _ = keystore.read_secret(keystore.card_key_ref(tenant_id=tenant_id, card_id=card_id,
                                                               slot_id=0, number=1).path)
        items += [(keystore.BlobRef(f"{keystore.tenant_root(tenant_id)}/cards/{card_id}", f), ct)
                  for f, ct in fields.items()]
    keystore.rotate_kek(tenant_id)
    started = time.perf_counter()
    for start in range(0, len(items), args.batch):
        rewrap._rewrap_batch(tenant_id, items[start:start + args.batch])
    t_transit_batched = time.perf_counter() - started
    started = time.perf_counter()
    for item in items:
        rewrap._rewrap_batch(tenant_id, [item])
    t_transit_single = time.perf_counter() - started
    print(f"Transit only: batched {t_transit_batched:.2f}s, one call per key {t_transit_single:.2f}s, "
          f"ratio {t_transit_single / t_transit_batched:.1f}x")


if __name__ == "__main__":
    main()
