"""JCOP cards are reported with their GP KDD, and the agent checks it in INITIALIZE UPDATE's answer.

Sources: GlobalPlatform Card Spec 2.3 (GET DATA tag 'CF', Key Diversification Data; INITIALIZE
UPDATE's answer starts with the same 10 bytes of key diversification data for SCP02 and SCP03,
clause 11.5 / E.5.1 / Amendment D 7.1.1, as e.g. the INITIALIZE UPDATE parsers of GlobalPlatformPro
and Dogtag's RA_Processor read it). The expected KDD values are the virtual card's own identity,
never numbers made up here.
"""
from __future__ import annotations

import threading

import pytest

from readeragent import monitor, protocol
from readeragent.executor import execute

from . import flows
from .conftest import VirtualTransport
from .test_monitor import PyscardLike

INITIALIZE_UPDATE, EXTERNAL_AUTHENTICATE = 0x50, 0x82


class _Connection(PyscardLike):
    def disconnect(self) -> None:
        pass


def _presented(identity, card, monkeypatch) -> list[dict]:
    sent: list[dict] = []
    monkeypatch.setattr(monitor, "connect", lambda reader: _Connection(card))
    watcher = monitor.CardMonitor(identity, "Virtual PCD 00 00", lambda name, doc: sent.append(doc),
                                  card_lock=threading.Lock())
    watcher._presented(card.atr)
    return sent


def test_cardsim_get_data_cf_is_the_kdd_initialize_update_starts_with():
    card = flows.make_jcop_card()
    assert card.transmit(bytes.fromhex("00A4040008A00000015100000000"))[-2:] == b"\x90\x00"
    answer = card.transmit(bytes.fromhex("80CA00CF00"))
    assert answer[:2] == b"\xCF\x0A" and answer[-2:] == b"\x90\x00"
    kdd = answer[2:12]
    init = card.transmit(bytes.fromhex("8050000008") + bytes(8) + b"\x00")
    assert init[-2:] == b"\x90\x00" and init[:10] == kdd == card.identity.kdd


def test_jcop_with_a_7_byte_uid_is_reported_with_its_kdd_without_initialize_update(identity, monkeypatch):
    card = flows.make_jcop_card()  # the default JCOP4Card: a 7-byte UID, as ISO 14443 readers give
    assert len(card.identity.uid) == 7
    counter = card.sequence_counter
    [report] = _presented(identity, card, monkeypatch)
    assert report["type"] == "card_presented" and report["uid"] == flows.jcop_uid(card)
    assert report["chip_type"] == "jcop4"
    assert report["kdd"] == card.identity.kdd.hex().upper()
    protocol.verify_signature(report, identity.sign_private_key.public_key(), "report")  # kdd is signed
    assert card.ins_counts.get(INITIALIZE_UPDATE) is None and card.sequence_counter == counter


@pytest.mark.parametrize("flavour", ["ev1", "ev2", "ev3"])
def test_desfire_reports_are_unchanged(identity, monkeypatch, flavour):
    card = flows.make_desfire_card(flavour=flavour)
    [report] = _presented(identity, card, monkeypatch)
    assert report["chip_type"] == f"desfire_{flavour}" and "kdd" not in report


def test_read_kdd_refuses_an_answer_that_is_not_cf_0a():
    class Odd:
        def transmit(self, apdu):
            return ([], 0x90, 0x00) if apdu[1] == 0xA4 else ([0xCF, 0x08, *range(8)], 0x90, 0x00)

    assert monitor.read_kdd(Odd()) is None


def _envelope(cms, card, kdd: str):
    return cms.envelope(flows.jcop_steps(), flows.jcop_keys(), uid=flows.jcop_uid(card), chip_type="jcop4",
                        card={"uid": flows.jcop_uid(card), "chip_type": "jcop4", "kdd": kdd})


def test_initialize_update_with_the_envelope_kdd_runs(cms, identity, ledger):
    card = flows.make_jcop_card()
    result = execute(_envelope(cms, card, card.identity.kdd.hex().upper()), VirtualTransport(card),
                     identity=identity, ledger=ledger, card_uid=flows.jcop_uid(card))
    assert result["state"] == "succeeded", result["error"]


def test_another_chip_stops_before_external_authenticate(cms, identity, ledger):
    """Same UID, other KDD (a swapped chip): INITIALIZE UPDATE is answered, nothing after it is sent."""
    card = flows.make_jcop_card()
    other = flows.make_jcop_card(seed=99).identity.kdd
    assert other != card.identity.kdd
    result = execute(_envelope(cms, card, other.hex()), VirtualTransport(card), identity=identity,
                     ledger=ledger, card_uid=flows.jcop_uid(card))
    assert result["state"] == "failed"
    error = result["error"]
    assert error["kind"] == "KddMismatchError" and error["op"] == "gp.open_scp03"
    assert error["authentication"] is False
    assert result["steps"][-1]["status"] == "failed" and result["steps_done"] == 1
    assert card.ins_counts.get(INITIALIZE_UPDATE) == 1
    assert card.ins_counts.get(EXTERNAL_AUTHENTICATE) is None
    assert card.failed_authentications == 0


def test_a_malformed_envelope_kdd_is_refused_before_the_card(cms, identity, ledger):
    card = flows.make_jcop_card()
    result = execute(_envelope(cms, card, "0102"), VirtualTransport(card), identity=identity, ledger=ledger,
                     card_uid=flows.jcop_uid(card))
    assert result["state"] == "refused" and card.ins_counts == {}
