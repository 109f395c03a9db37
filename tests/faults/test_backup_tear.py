"""A tear during a backup-file write (issue 6): the card's data is old or new, never a mix.

The host (cardproto.desfire) writes a 40-byte DESFire backup data file (its whole size) and commits, on the
virtual card (cardsim.desfire), in every comm mode and for EV2 and EV1 secure messaging. The field drops
(1) before the card executes each APDU of authenticate + WriteData + CommitTransaction, (2) after it
executed each of them (the answer lost), and (3) half-way through programming the write (the card's
tear_next_write). Then the card is powered up again and read with the read key: the file holds exactly
the old data or exactly the new data, and new only when the CommitTransaction was executed. In process
(no readers): the card's transaction semantics, not the transport, are under test here; the transport
side of a removal is tests/e2e/test_removal.py.
"""
from __future__ import annotations

import os

import pytest

from cardproto.desfire import CommMode, DESFire
from cardsim.base import CardRemoved, FaultPlan
from tests.cardproto.test_desfire_virtual_card import (
    AID,
    BACKUP,
    FLAVOURS,
    authenticate,
    create_files,
    provision,
)
from tests.support.proof import record

CASES = [(f, c) for f in ("ev2-card-ev2-sm", "ev1-card-aes", "ev1-card-2k3des")
         for c in (CommMode.PLAIN, CommMode.MAC, CommMode.FULL)]
OLD = bytes(range(40))
RESULTS: dict[str, dict] = {}


def _card_with_old_data(name: str, comm: CommMode):
    p = provision(FLAVOURS[name])
    create_files(p, comm)
    p.auth(3)
    p.df.write_data(BACKUP, 0, OLD, comm)
    p.df.commit_transaction()
    return p


def _write_new(p, comm: CommMode, new: bytes) -> None:
    p.auth(2)
    p.df.write_data(BACKUP, 0, new, comm)
    p.df.commit_transaction()


def _read_back(p, comm: CommMode) -> bytes:
    p.card.faults = FaultPlan()
    p.card.power_off()
    p.card.power_on()
    df = DESFire(p.card)
    df.select_application(AID)
    authenticate(df, p.flavour, 1, p.keys[1])
    return df.read_data(BACKUP, 0, 40, comm)


@pytest.mark.parametrize("name,comm", CASES, ids=[f"{f}-{c.name.lower()}" for f, c in CASES])
def test_a_torn_backup_write_leaves_old_or_new(name, comm):
    new = os.urandom(40)
    clean = _card_with_old_data(name, comm)
    start = clean.card.apdu_count
    _write_new(clean, comm, new)
    count = clean.card.apdu_count - start
    commit_index = count - 1  # CommitTransaction is the last APDU of the sequence
    assert _read_back(clean, comm) == new

    seen = {"old": 0, "new": 0}
    faults = 0
    for index in range(count):
        for where in ("before", "after"):
            p = _card_with_old_data(name, comm)
            at = p.card.apdu_count + index
            field = "remove_after" if where == "before" else "remove_after_executing"
            p.card.faults = FaultPlan(**{field: at})
            with pytest.raises(CardRemoved):
                _write_new(p, comm, new)
            faults += 1
            data = _read_back(p, comm)
            assert data in (OLD, new), (index, where, data.hex())
            committed = where == "after" and index == commit_index
            assert data == (new if committed else OLD), (index, where)
            seen["new" if data == new else "old"] += 1
    for tear_commit in (False, True):  # torn while programming the data, and at the commit's switch-over
        p = _card_with_old_data(name, comm)
        p.auth(2)
        if tear_commit:
            p.df.write_data(BACKUP, 0, new, comm)
        p.card.faults = FaultPlan(tear_next_write=True)
        with pytest.raises(CardRemoved):
            if tear_commit:
                p.df.commit_transaction()
            else:
                p.df.write_data(BACKUP, 0, new, comm)
        faults += 1
        assert _read_back(p, comm) == OLD
        seen["old"] += 1
    RESULTS[f"{name}-{comm.name.lower()}"] = {"apdus": count, "faults": faults, **seen}
    record("fault_backup_tear", {
        "cases": len(RESULTS), "faults_injected": sum(r["faults"] for r in RESULTS.values()),
        "failures_found": 0, "mixed_results": 0,
        "cases_detail": [f"{k}: {v}" for k, v in sorted(RESULTS.items())]})
