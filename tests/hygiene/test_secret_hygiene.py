"""Secret hygiene after a full provisioning run with known keys (issue 6, "Isolation and secrets").

A DESFire EV2 and a JCOP 4 card are provisioned end to end (MES order over the API, runstack: OpenBao,
gunicorn, Celery worker and beat on a private Redis, `python -m readeragent run` on pcscd + vpcd). The
master keys were imported with known bytes (keys.services.master_key_version_import); random and
diversified card keys are read back from the virtual cards after the run, so every key is known. Then
each key is searched, as raw bytes, hex (upper and lower case) and base64 (standard and URL-safe, with
and without padding), in: the database file and its SQL dump, every file of the instance folder (but
the demo cards' own memory, instance/cards/) and of the agent's home, the captured output of web,
worker and beat (stack.log) and of the agent, every Redis key and value at the end, every command Redis
executed during the run (MONITOR: Celery job and result messages included), and the job rows with their
traces as the API answers them. Base64 blobs found in any of these (Celery message bodies) are decoded
and searched too, two levels deep. Expected: 0 hits.
"""
from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import sqlite3
from pathlib import Path

import pytest

from cardsim.desfire import DESFireCard
from tests.e2e.test_pipeline import _api, _run_card
from tests.support.proof import record

from .conftest import MASTERS

pytestmark = [pytest.mark.pcsc, pytest.mark.vault, pytest.mark.slow, pytest.mark.xdist_group("pcsc")]
B64_TOKEN = re.compile(rb"[A-Za-z0-9+/_-]{16,}={0,2}")


def forms(key: bytes) -> dict[str, bytes]:
    """Every spelling of a key a leak could take."""
    b64 = base64.b64encode(key)
    url = base64.urlsafe_b64encode(key)
    return {"raw": key, "hex-lower": key.hex().encode(), "hex-upper": key.hex().upper().encode(),
            "b64": b64, "b64-nopad": b64.rstrip(b"="), "b64url": url, "b64url-nopad": url.rstrip(b"=")}


def expand(blob: bytes, depth: int = 2) -> list[bytes]:
    """The blob, plus what its base64-looking tokens decode to (nested up to `depth`)."""
    out = [blob]
    if depth == 0:
        return out
    for token in set(B64_TOKEN.findall(blob)):
        for decoder in (base64.b64decode, base64.urlsafe_b64decode):
            try:
                decoded = decoder(token + b"=" * (-len(token) % 4))
            except (binascii.Error, ValueError):
                continue
            out.extend(expand(decoded, depth - 1))
    return out


def search(keys: dict[str, bytes], haystacks: dict[str, bytes]) -> list[tuple[str, str, str]]:
    hits = []
    for source, blob in haystacks.items():
        pieces = expand(blob)
        for name, key in keys.items():
            for form, needle in forms(key).items():
                if any(needle in piece for piece in pieces):
                    hits.append((name, form, source))
    return hits


def desfire_keys(card: DESFireCard) -> dict[str, bytes]:
    return {f"desfire {app.aid.hex()}/{no}": bytes(key.value)
            for app in (card.picc, *card.apps.values()) for no, key in enumerate(app.keys)}


def jcop_keys(card) -> dict[str, bytes]:
    return {f"jcop kvn {kvn:02x}/{key_id}": bytes(value)
            for kvn, key_set in card.key_sets.items() for key_id, value in key_set.keys.items()}


def redis_dump(url: str) -> bytes:
    """Every key and value in the broker database(s) at the end of the run."""
    import redis

    out = []
    for db in range(16):
        client = redis.Redis.from_url(url, db=db)
        for name in client.scan_iter(count=500):
            kind = client.type(name).decode()
            if kind == "string":
                values = [client.get(name)]
            elif kind == "list":
                values = client.lrange(name, 0, -1)
            elif kind == "hash":
                values = [b for pair in client.hgetall(name).items() for b in pair]
            elif kind == "set":
                values = list(client.smembers(name))
            elif kind == "zset":
                values = client.zrange(name, 0, -1)
            else:
                values = [kind.encode()]
            out.append(name + b"\n" + b"\n".join(v or b"" for v in values))
    return b"\n".join(out)


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(path): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


def test_no_key_bytes_anywhere_after_a_desfire_and_a_jcop_run(cms_stack, enrolled_station, pcsc_card):
    from cardsim.jcop import JCOP4Card

    desfire = DESFireCard("ev2", picc_key_type="des")
    job_d, detail_d, _, home = _run_card(cms_stack, enrolled_station, pcsc_card, desfire, "campus",
                                         desfire.uid.hex().upper())
    assert job_d["state"] == "succeeded", detail_d
    jcop = JCOP4Card(seed=secrets.token_hex(4), uid=bytes.fromhex("04") + secrets.token_bytes(9))
    job_j, detail_j, _, _ = _run_card(cms_stack, enrolled_station, pcsc_card, jcop, "fob",
                                      jcop.identity.uid.hex().upper())
    assert job_j["state"] == "succeeded", detail_j

    keys = {f"master {name}": key for name, (_, key) in MASTERS.items()}
    keys.update(desfire_keys(desfire))
    keys.update(jcop_keys(jcop))
    # All-zero keys are the DESFire factory defaults (published, in every spec): not a secret, and zero
    # runs appear in any binary file. After the run none should be left on the card anyway.
    zero = {name for name, key in keys.items() if not any(key)}
    assert not zero, f"the run left factory-default keys on the card: {zero}"
    assert len(desfire_keys(desfire)) == 4 and len({k for k in jcop_keys(jcop) if "kvn 31" in k}) == 3

    instance = cms_stack.instance_dir
    database = instance / "cms.sqlite3"
    connection = sqlite3.connect(database)
    dump = "\n".join(connection.iterdump()).encode()
    connection.close()
    jobs = [_api(cms_stack, "GET", f"jobs/{job['id']}/").json() for job in (job_d, job_j)]
    haystacks = {"sql dump": dump, "redis at end": redis_dump(cms_stack.broker),
                 "redis monitor": "\n".join(cms_stack.monitor.lines).encode(),
                 "stack log (web, worker, beat)": cms_stack.log.read_bytes(),
                 "jobs via API (rows, traces)": json.dumps(jobs).encode()}
    # instance/cards/ is the memory of runstack's own demo virtual cards (cms.demo.card_state): a card
    # holds its keys by definition (there, the published GP test keys 40..4F of its factory key set).
    haystacks.update({name: blob for name, blob in files_under(instance).items()
                      if not Path(name).is_relative_to(instance / "cards")})
    haystacks.update(files_under(home))
    assert len(cms_stack.monitor.lines) > 50 and any("station." in line for line in cms_stack.monitor.lines)
    assert b"cms.job_result" in haystacks["stack log (web, worker, beat)"]  # the worker's output is in it
    assert any(entry["direction"] == "TX" for job in jobs for entry in job["trace"])

    # the detector itself: a planted key in each spelling is found (in a Celery-like nested body too)
    planted = next(iter(keys.values()))
    celery_like = base64.b64encode(json.dumps([[{"k": base64.b64encode(planted).decode()}]]).encode())
    for form, needle in forms(planted).items():
        assert search({"planted": planted}, {"probe": b"xx" + needle + b"yy"}), form
    assert search({"planted": planted}, {"probe": b'{"body": "' + celery_like + b'"}'})

    hits = search(keys, haystacks)
    scanned = sum(len(blob) for blob in haystacks.values())
    record("secret_hygiene", {
        "runs": ["desfire-ev2", "jcop4"], "keys": len(keys), "forms_per_key": len(forms(planted)),
        "sources": len(haystacks), "bytes_scanned": scanned,
        "redis_commands_seen": len(cms_stack.monitor.lines),
        "hits": len(hits), "hit_list": hits[:20]})
    assert hits == [], hits
