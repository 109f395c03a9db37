"""The executor runs the seed-002 JCOP 4 flow (SCP03 and SCP02) on the in-process virtual JCOP 4 card."""
from __future__ import annotations

import pytest

from cardproto.crypto import kcv_aes, kcv_des3
from readeragent import protocol
from readeragent.executor import execute, run_steps

from . import flows
from .conftest import VirtualTransport

INITIALIZE_UPDATE, EXTERNAL_AUTHENTICATE, PUT_KEY = 0x50, 0x82, 0xD8


def _run(cms, identity, ledger, card, steps, keys):
    envelope = cms.envelope(steps, keys, uid=flows.jcop_uid(card), chip_type="jcop4")
    return execute(envelope, VirtualTransport(card), identity=identity, ledger=ledger,
                   card_uid=flows.jcop_uid(card))


@pytest.mark.parametrize("scp", ["scp03", "scp02"])
def test_seed002_flow_replaces_the_isd_keys_stores_data_and_locks(cms, identity, ledger, scp):
    card = flows.make_jcop_card()
    keys = flows.jcop_keys(scp)
    result = _run(cms, identity, ledger, card, flows.jcop_steps(scp), keys)

    assert result["state"] == "succeeded", result["error"]
    assert result["steps_done"] == 8
    put_key = result["steps"][2]
    assert put_key["confirms"] == {"key_versions": [11, 12, 13]}
    assert put_key["observed"]["kcv_match"] is True
    protocol.verify_signature(result, identity.sign_private_key.public_key(), "result")
    new_kvn = 0x31 if scp == "scp03" else 0x21
    kcv = kcv_aes if scp == "scp03" else kcv_des3
    held = {(k["kvn"], k["key_id"]): k["kcv"] for k in card.keys_held()[flows.ISD_AID.lower()]}
    want = [kcv(keys[ref]).hex() for ref in ("kv-11", "kv-12", "kv-13")]
    assert [held[(new_kvn, key_id)] for key_id in (1, 2, 3)] == want
    assert card.life_cycle == 0x7F  # CARD_LOCKED
    # PUT KEY, both channel openings and the tenant's STORE DATA are redacted in the trace
    text = protocol.canonical(result).decode().upper()
    for ref, key in keys.items():
        assert key.hex().upper() not in text, ref
    assert flows.STORE_DATA not in text
    for entry in result["trace"]:
        if entry["step"] in (1, 2, 4, 5) and entry["direction"] == "TX":
            assert entry["redacted"], entry


def test_wrong_transport_keys_stop_before_external_authenticate(cms, identity, ledger):
    """The card cryptogram does not verify: EXTERNAL AUTHENTICATE is never sent, nothing retried."""
    card = flows.make_jcop_card(scp03_keys=bytes(range(16)))
    result = _run(cms, identity, ledger, card, flows.jcop_steps(), flows.jcop_keys())
    assert result["state"] == "failed"
    assert result["error"]["kind"] == "CryptogramError" and result["error"]["authentication"] is True
    assert result["steps_done"] == 1
    assert card.ins_counts.get(INITIALIZE_UPDATE) == 1
    assert card.ins_counts.get(EXTERNAL_AUTHENTICATE) is None
    assert card.failed_authentications == 0  # the card's counter was never touched


class _FlipHostCryptogram(VirtualTransport):
    """A link that damages the host cryptogram of EXTERNAL AUTHENTICATE: the card must refuse it."""

    def transmit(self, apdu: bytes) -> bytes:
        if apdu[1] == EXTERNAL_AUTHENTICATE:
            apdu = apdu[:5] + bytes((apdu[5] ^ 0x01,)) + apdu[6:]
        return super().transmit(apdu)


def test_card_refusing_external_authenticate_is_failed_once_and_never_retried(cms, identity, ledger):
    card = flows.make_jcop_card()
    envelope = cms.envelope(flows.jcop_steps(), flows.jcop_keys(), uid=flows.jcop_uid(card),
                            chip_type="jcop4")
    result = execute(envelope, _FlipHostCryptogram(card), identity=identity, ledger=ledger,
                     card_uid=flows.jcop_uid(card))
    assert result["state"] == "failed"
    error = result["error"]
    assert error["op"] == "gp.open_scp03" and error["authentication"] is True
    assert error["kind"] == "AuthenticationRejectedError"
    assert error["apdu"].startswith("8482") and error["sw"] is not None
    assert card.ins_counts.get(EXTERNAL_AUTHENTICATE) == 1
    assert card.failed_authentications == 1
    again = execute(envelope, VirtualTransport(card), identity=identity, ledger=ledger,
                    card_uid=flows.jcop_uid(card))
    assert again["error"]["reason"] == "replay"
    assert card.ins_counts.get(EXTERNAL_AUTHENTICATE) == 1 and card.failed_authentications == 1


def _apdu_steps():
    card = flows.make_jcop_card()
    outcome = run_steps(flows.jcop_steps(), VirtualTransport(card),
                        {k: bytearray(v) for k, v in flows.jcop_keys().items()}, chip_type="jcop4")
    assert outcome["state"] == "succeeded", outcome["error"]
    return [e["step"] for e in outcome["trace"] if e["direction"] == "TX"]


APDU_STEPS = _apdu_steps()


@pytest.mark.parametrize("executed", [False, True], ids=["before-card-executes", "after-card-executes"])
@pytest.mark.parametrize("index", range(len(APDU_STEPS)))
def test_card_removal_at_every_apdu_of_the_jcop_flow(cms, identity, ledger, index, executed):
    card = flows.make_jcop_card()
    if executed:
        card.faults.remove_after_executing = index
    else:
        card.faults.remove_after = index
    result = _run(cms, identity, ledger, card, flows.jcop_steps(), flows.jcop_keys())
    step = APDU_STEPS[index]
    assert result["state"] == "interrupted"
    assert result["steps_done"] == step
    last = result["steps"][-1]
    assert last["index"] == step
    assert last["status"] == ("in_flight" if last["op"] == "gp.put_key" else "failed")
    if last["op"] == "gp.put_key":
        kvns = {k["kvn"] for k in card.keys_held()[flows.ISD_AID.lower()]}
        assert (0x31 in kvns) is executed  # only a probe (GET DATA key information) can tell
        assert card.ins_counts.get(PUT_KEY) == 1
