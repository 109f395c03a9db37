"""Benchmark: KEK rotation rewrap of N wrapped keys, Transit batches vs one Transit call per key.

Prints figures, never asserts.

    .venv/bin/python bench/rewrap.py [--keys 100000] [--per-card 4] [--batch 240] [--workers 8]
                                     [--sample 2000]

Starts its own throwaway OpenBao with cms.localvault (temp folder, free port, raft storage, file
audit device), so it needs no running services. Two figures, each batched vs one call per key:
the whole tenant rewrap as a KEK rotation runs it (KV list, read, check-and-set write and destroy
of every card secret included) and Transit alone (rewrap of the same ciphertexts). The per-key
paths run on --sample keys and are extrapolated (the output says so).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--per-card", type=int, default=4)
    parser.add_argument("--batch", type=int, default=None, help="keys per Transit call (keystore default)")
    parser.add_argument("--workers", type=int, default=None,
                        help="threads for Vault requests (rewrap default)")
    parser.add_argument("--sample", type=int, default=2000, help="keys for the one-call-per-key runs")
    args = parser.parse_args()

    from cms import localvault

    with tempfile.TemporaryDirectory(prefix="bench-openbao-") as folder:
        instance = localvault.up(folder, port=localvault.free_port_pair(), quiet=True)
        try:
            os.environ.update(VAULT_ADDR=instance.addr, VAULT_TOKEN=instance.cms_token(),
                              DJANGO_SETTINGS_MODULE="cms.settings", LOG_LEVEL="WARNING")
            import django

            django.setup()
            _run(args)
        finally:
            localvault.down(folder)


def _fill(tenant_id: int, keys: int, per_card: int, batch: int, workers: int) -> int:
    """Store `keys` random wrapped keys, `per_card` per card secret; a Transit batch spans many cards."""
    from keys import keystore, rewrap

    cards = max(1, keys // per_card)
    per_call = max(1, batch // per_card)
    groups = [range(first, min(cards, first + per_call)) for first in range(0, cards, per_call)]

    def store(group) -> None:
        keystore.wrap_and_store(tenant_id, {
            keystore.card_key_ref(tenant_id=tenant_id, card_id=card_id, slot_id=slot, number=1):
                os.urandom(16) for card_id in group for slot in range(per_card)})
    rewrap._pool_map(workers, store, groups)
    return cards * per_card


def _ciphertexts(tenant_id: int, workers: int) -> list:
    from keys import keystore, rewrap

    paths = rewrap.list_secrets(tenant_id)
    secrets = rewrap._pool_map(workers, keystore.read_secret, paths)
    return [(keystore.BlobRef(path, field), ct) for path, (fields, _) in zip(paths, secrets, strict=True)
            for field, ct in sorted(fields.items())]


def _run(args) -> None:
    from keys import keystore, rewrap

    batch = args.batch or keystore.DEFAULT_BATCH
    workers = args.workers or rewrap.WORKERS
    big, small = 1, 2
    for tenant_id in (big, small):
        keystore.ensure_kek(tenant_id)
    started = time.perf_counter()
    total = _fill(big, args.keys, args.per_card, batch, workers)
    print(f"setup: {total} keys ({args.per_card} per card secret) wrapped and stored in "
          f"{time.perf_counter() - started:.1f}s")
    _fill(small, args.sample, args.per_card, batch, workers)

    # 1. the whole rewrap as a KEK rotation runs it (list, KV read, Transit rewrap, KV write + destroy)
    keystore.rotate_kek(big)
    started = time.perf_counter()
    report = rewrap.rewrap_tenant(big, batch_size=batch, raise_min_version=False, workers=workers)
    t_whole = time.perf_counter() - started
    keystore.rotate_kek(small)
    started = time.perf_counter()
    naive = rewrap.rewrap_one_by_one(small)
    t_naive = time.perf_counter() - started
    whole_rate, naive_rate = report.blobs_rewrapped / t_whole, naive.blobs_rewrapped / t_naive
    print(f"whole rewrap, batches of {batch}, {workers} threads: {report.blobs_rewrapped} keys in "
          f"{report.secrets} secrets, {report.transit_calls} Transit calls, {t_whole:.1f}s = "
          f"{whole_rate:,.0f} keys/s")
    print(f"whole rewrap, one Transit call per key, one request at a time "
          f"(SAMPLED on {naive.blobs_rewrapped} keys, extrapolated to {total}: {total / naive_rate:.0f}s): "
          f"{naive_rate:,.0f} keys/s")
    print(f"ratio whole rewrap, batched / per key: {whole_rate / naive_rate:.1f}x")

    # 2. Transit alone: the same ciphertexts rewrapped again (no KV traffic)
    items = _ciphertexts(big, workers)
    keystore.rotate_kek(big)
    batches = [items[i:i + batch] for i in range(0, len(items), batch)]
    started = time.perf_counter()
    for part in batches:
        rewrap._rewrap_batch(big, part)
    t_serial = time.perf_counter() - started
    keystore.rotate_kek(big)
    started = time.perf_counter()
    rewrap._pool_map(workers, lambda part: rewrap._rewrap_batch(big, part), batches)
    t_parallel = time.perf_counter() - started
    sampled = items[:args.sample]
    started = time.perf_counter()
    for item in sampled:
        rewrap._rewrap_batch(big, [item])
    t_single = time.perf_counter() - started
    serial_rate, parallel_rate = len(items) / t_serial, len(items) / t_parallel
    single_rate = len(sampled) / t_single
    print(f"Transit only, batches of {batch}, one call at a time: {len(items)} keys in {t_serial:.1f}s = "
          f"{serial_rate:,.0f} keys/s")
    print(f"Transit only, batches of {batch}, {workers} threads: {len(items)} keys in {t_parallel:.1f}s = "
          f"{parallel_rate:,.0f} keys/s")
    print(f"Transit only, one call per key (SAMPLED on {len(sampled)} keys, extrapolated to {len(items)}: "
          f"{len(items) / single_rate:.0f}s): {single_rate:,.0f} keys/s")
    print(f"ratio Transit only, batched / per key: {serial_rate / single_rate:.1f}x one call at a time, "
          f"{parallel_rate / single_rate:.1f}x with {workers} threads")
    print(f"goal >= 10,000 keys/s and >= 20x: whole rewrap {whole_rate:,.0f} keys/s "
          f"{'meets' if whole_rate >= 10_000 else 'MISSES'} the rate; Transit batches "
          f"{parallel_rate:,.0f} keys/s {'meet' if parallel_rate >= 10_000 else 'MISS'} it")


if __name__ == "__main__":
    main()
