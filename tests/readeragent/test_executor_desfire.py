"""The executor runs the seed-003 DESFire flow on an in-process virtual card and stops where it must."""
from __future__ import annotations

import pytest

from cardproto.desfire import CommMode, DESFire
from readeragent import protocol
from readeragent.executor import execute

from . import flows
from .conftest import VirtualTransport


def _run(cms, identity, ledger, card, steps=None, keys=None, **kw):
    envelope = cms.envelope(steps or flows.desfire_steps(), keys or flows.desfire_keys(),
                            uid=flows.DESFIRE_UID, **kw)
    return execute(envelope, VirtualTransport(card), identity=identity, ledger=ledger,
                   card_uid=flows.DESFIRE_UID), envelope


def test_seed003_flow_provisions_the_card_and_the_result_is_signed_by_the_station(cms, identity, ledger):
    card = flows.make_desfire_card()
    keys = flows.desfire_keys()
    result, envelope = _run(cms, identity, ledger, card, keys=keys)

    assert result["state"] == "succeeded", result["error"]
    assert result["steps_done"] == len(flows.desfire_steps()) == len(result["steps"])
    assert [s["confirms"] for s in result["steps"] if "confirms" in s] == [
        {"key_version": 1}, {"key_version": 3}, {"key_version": 2}]
    assert result["steps"][4]["observed"] == {"key_version": 1}
    protocol.verify_signature(result, identity.sign_private_key.public_key(), "result")
    assert ledger.state(envelope["job_id"]) == "succeeded"

    # An independent host session proves what the card now holds.
    df = DESFire(VirtualTransport(card))
    df.select_application(b"\x00\x00\x00")
    df.authenticate_ev2_first(0, bytearray(keys["kv-1"]))
    assert df.get_key_version(0) == 1
    df.select_application(bytes.fromhex(flows.APP_AID))
    df.authenticate_ev2_first(1, bytearray(keys["kv-3"]))
    assert df.read_data(1, 0, 32, CommMode.FULL).hex() == flows.FILE_DATA
    assert df.get_value(2, CommMode.FULL) == 100


def test_no_key_bytes_in_result_and_key_bearing_exchanges_are_redacted(cms, identity, ledger):
    keys = flows.desfire_keys()
    result, envelope = _run(cms, identity, ledger, flows.make_desfire_card(), keys=keys)
    text = protocol.canonical(result).decode().lower() + protocol.canonical(envelope).decode().lower()
    for ref, key in keys.items():
        if any(key):
            assert key.hex() not in text, ref
    steps = flows.desfire_steps()
    for entry in result["trace"]:
        if steps[entry["step"]]["op"] in ("desfire.authenticate", "desfire.change_key"):
            assert entry["redacted"] or len(entry["apdu_hex"]) <= 4, entry
            assert "redacted" in entry["apdu_hex"] or entry["direction"] == "RX"


def test_unexpected_status_word_stops_at_the_step_with_apdu_sw_and_meaning(cms, identity, ledger):
    card = flows.make_desfire_card()
    steps = flows.desfire_steps()
    steps.insert(7, dict(steps[6]))  # create the same application twice
    result, _ = _run(cms, identity, ledger, card, steps=steps)
    assert result["state"] == "failed"
    assert result["steps_done"] == 7
    assert result["steps"][-1] == {"index": 7, "op": "desfire.create_application", "status": "failed"}
    error = result["error"]
    assert error["step"] == 7 and error["op"] == "desfire.create_application"
    assert error["apdu"].startswith("90CA0000")
    assert error["sw"] == "91DE"
    assert error["meaning"] == "DESFire: file or application with that number already exists"
    assert error["authentication"] is False


@pytest.mark.parametrize(("flavour", "step_no", "ins"),
                         [("ev2", 1, 0x1A), ("ev2", 3, 0x71), ("ev1", 3, 0xAA)])
def test_authentication_failure_is_never_retried(cms, identity, ledger, flavour, step_no, ins):
    keys = flows.desfire_keys()
    card = flows.make_desfire_card(flavour=flavour)
    steps = flows.desfire_steps()
    if step_no == 1:  # the card's PICC key is not the transport key the CMS believes
        card = flows.make_desfire_card(flavour=flavour, picc_key=bytes(range(16)))
    else:  # the key authenticated right after ChangeKey is not the one that was written
        steps[3] = {**steps[3], "key": "kv-2"}
    result, envelope = _run(cms, identity, ledger, card, steps=steps, keys=keys,
                            chip_type=f"desfire_{flavour}")

    assert result["state"] == "failed"
    assert result["error"]["authentication"] is True
    assert result["error"]["op"] == "desfire.authenticate"
    assert result["steps_done"] == step_no
    assert card.ins_counts.get(ins) == 1
    sent = card.apdu_count
    # Celery redelivers the same job: the ledger refuses it, the card hears nothing more.
    again = execute(envelope, VirtualTransport(card), identity=identity, ledger=ledger,
                    card_uid=flows.DESFIRE_UID)
    assert again["state"] == "refused" and again["error"]["reason"] == "replay"
    assert card.apdu_count == sent and card.ins_counts.get(ins) == 1


def _apdu_steps():
    """Which step each APDU of the clean DESFire flow belongs to (from a clean run's trace)."""
    from readeragent.executor import run_steps

    outcome = run_steps(flows.desfire_steps(), VirtualTransport(flows.make_desfire_card()),
                        {k: bytearray(v) for k, v in flows.desfire_keys().items()}, chip_type="desfire_ev2")
    assert outcome["state"] == "succeeded"
    return [e["step"] for e in outcome["trace"] if e["direction"] == "TX"]


APDU_STEPS = _apdu_steps()


@pytest.mark.parametrize("executed", [False, True], ids=["before-card-executes", "after-card-executes"])
@pytest.mark.parametrize("index", range(len(APDU_STEPS)))
def test_card_removal_at_every_apdu_records_exactly_the_steps_done(cms, identity, ledger, index, executed):
    card = flows.make_desfire_card()
    keys = flows.desfire_keys()
    if executed:
        card.faults.remove_after_executing = index
    else:
        card.faults.remove_after = index
    result, envelope = _run(cms, identity, ledger, card, keys=keys)

    step = APDU_STEPS[index]
    op = flows.desfire_steps()[step]["op"]
    assert result["state"] == "interrupted"
    assert result["error"]["kind"] == "CardRemovedError"
    assert [s["index"] for s in result["steps"] if s["status"] == "done"] == list(range(step))
    assert result["steps_done"] == step
    assert result["steps"][-1]["index"] == step
    assert result["steps"][-1]["status"] == ("in_flight" if op == "desfire.change_key" else "failed")
    assert ledger.state(envelope["job_id"]) == "interrupted"
    protocol.verify_signature(result, identity.sign_private_key.public_key(), "result")
    if op == "desfire.change_key":
        # In flight means unknown to the host: the card holds the old or the new key, as the fault
        # decided; only a probe (GetKeyVersion) can tell, which is why the CMS must run one.
        held = card.keys_held()
        aid = "000000" if step == 2 else flows.APP_AID.lower()
        key_no = flows.desfire_steps()[step]["key_no"]
        version = held[aid][key_no]["version"] if aid in held else None
        assert version == (1 if executed else 0)
