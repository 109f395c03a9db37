"""The station's side of a CMS job-signing key roll (readeragent/keyroll.py), through the agent's real
protocol, identity file, replay ledger, executor and (for the Celery task) real Redis.

The CMS half is played as in conftest.Cms (an Ed25519 key per version); tests/pipeline/
test_signing_key_roll.py plays it with the real CMS and OpenBao Transit."""
from __future__ import annotations

import json
import os
import stat
import uuid

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from readeragent import executor, keyroll, protocol
from readeragent.identity import Identity
from readeragent.worker import Agent, make_app, register

from . import flows
from .conftest import BROKER, SHARES_CMS_QUEUE, VirtualTransport

pytestmark = SHARES_CMS_QUEUE


def _hex(key: Ed25519PrivateKey) -> str:
    return protocol.public_bytes_ed25519(key.public_key()).hex()


def roll(cms, new_key: Ed25519PrivateKey, new_version: int, *, signed_by=None, signed_version=None,
         station=None, roll_id=None, **extra) -> dict:
    document = {"v": 1, "type": "key_roll", "roll_id": roll_id or str(uuid.uuid4()),
                "station": station or cms.identity.station, "issued_at": 1, "new_version": new_version,
                "new_public_key": _hex(new_key),
                "signing_key_version": signed_version if signed_version is not None else cms.version, **extra}
    return protocol.sign_with(document, signed_by or cms.key)


@pytest.fixture
def home(tmp_path, identity, cms):
    path = tmp_path / "agent"
    identity.save(path)
    return path


def test_a_roll_signed_with_the_pinned_key_pins_the_new_version_in_the_identity_file(cms, identity, home,
                                                                                   ledger):
    new = Ed25519PrivateKey.generate()
    envelope_v2 = _sign_as(cms, new, 2, flows.desfire_steps(), flows.desfire_keys())
    before = executor.admit(envelope_v2, identity=identity, ledger=ledger)
    assert before["state"] == "refused" and before["error"]["reason"] == "signature"

    answer = keyroll.apply_key_roll(roll(cms, new, 2), identity, home)
    assert answer["state"] == "pinned" and answer["pinned_versions"] == [1, 2]
    protocol.verify_signature(answer, identity.sign_private_key.public_key(), "answer")
    path = home / "identity.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not [p for p in os.listdir(home) if p.startswith(".identity")]  # no temporary file left
    reloaded = Identity.load(home)
    assert reloaded.cms_signing_keys == {1: _hex(cms.key), 2: _hex(new)}
    assert reloaded.key_rolls_seen == [answer["roll_id"]]

    # a job signed with the new version now runs on the card, and one signed with the old still does
    card = flows.make_desfire_card()
    envelope_v2 = _sign_as(cms, new, 2, flows.desfire_steps(), flows.desfire_keys())
    result = executor.execute(envelope_v2, VirtualTransport(card), identity=reloaded, ledger=ledger,
                              card_uid=flows.DESFIRE_UID)
    assert result["state"] == "succeeded", result["error"]
    old = cms.envelope(flows.desfire_steps(), flows.desfire_keys(), uid=flows.DESFIRE_UID)
    assert executor.admit(old, identity=identity, ledger=ledger) is None


def _sign_as(cms, key, version, steps, keys):
    envelope = cms.envelope(steps, keys, uid=flows.DESFIRE_UID)
    envelope["signing_key_version"] = version
    return protocol.sign_with(envelope, key)


@pytest.mark.parametrize("case", ["unknown_key", "self_signed", "other_station", "tampered", "replay",
                                  "rollback", "other_key_same_version", "extra_field"])
def test_bad_rolls_are_refused_and_pin_nothing(cms, identity, home, case):
    new = Ed25519PrivateKey.generate()
    if case in ("replay", "rollback", "other_key_same_version"):
        first = roll(cms, new, 3)
        assert keyroll.apply_key_roll(first, identity, home)["state"] == "pinned"
    before = dict(identity.cms_signing_keys)
    document, reason = {
        "unknown_key": (roll(cms, new, 2, signed_by=Ed25519PrivateKey.generate()), "signature"),
        "self_signed": (roll(cms, new, 2, signed_by=new, signed_version=2), "signature"),
        "other_station": (roll(cms, new, 2, station="line9-st9"), "station"),
        "tampered": ({**roll(cms, new, 2), "new_public_key": _hex(Ed25519PrivateKey.generate())},
                     "signature"),
        "replay": (first if case == "replay" else None, "replay"),
        "rollback": (roll(cms, Ed25519PrivateKey.generate(), 2), "rollback"),
        "other_key_same_version": (roll(cms, Ed25519PrivateKey.generate(), 3), "rollback"),
        "extra_field": (roll(cms, new, 2, min_version=1), "malformed"),
    }[case]
    answer = keyroll.apply_key_roll(document, identity, home)
    assert (answer["state"], answer["reason"]) == ("refused", reason), answer
    protocol.verify_signature(answer, identity.sign_private_key.public_key(), "answer")
    assert identity.cms_signing_keys == before
    assert Identity.load(home).cms_signing_keys == before


def test_a_resent_roll_of_a_pinned_version_confirms_and_retire_below_forgets_older(cms, identity, home,
                                                                                   ledger):
    new = Ed25519PrivateKey.generate()
    assert keyroll.apply_key_roll(roll(cms, new, 2), identity, home)["state"] == "pinned"
    again = keyroll.apply_key_roll(roll(cms, new, 2), identity, home)  # a new roll id: the answer was lost
    assert again["state"] == "pinned" and again["pinned_versions"] == [1, 2]
    retire = keyroll.apply_key_roll(roll(cms, new, 2, signed_by=new, signed_version=2, retire_below=2),
                                    identity, home)
    assert retire["state"] == "pinned" and retire["pinned_versions"] == [2]
    assert sorted(Identity.load(home).cms_signing_keys) == [2]
    old = cms.envelope(flows.desfire_steps(), flows.desfire_keys(), uid=flows.DESFIRE_UID)
    assert executor.admit(old, identity=identity, ledger=ledger)["error"]["reason"] == "signature"


def test_an_unwritable_identity_file_pins_nothing(cms, identity, home, monkeypatch):
    import errno

    from readeragent import identity as identity_module

    def full_disk(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(identity_module.os, "replace", full_disk)  # the rename that makes the write take
    answer = keyroll.apply_key_roll(roll(cms, Ed25519PrivateKey.generate(), 2), identity, home)
    monkeypatch.undo()
    assert (answer["state"], answer["reason"]) == ("refused", "unavailable")
    assert sorted(identity.cms_signing_keys) == [1] and identity.key_rolls_seen == []
    assert json.loads((home / "identity.json").read_text())["cms_signing_keys"].keys() == {"1"}
    assert not [p for p in os.listdir(home) if p.startswith(".identity")]


@pytest.fixture
def cms_queue():
    from tests.e2e.station import CmsQueue

    queue = CmsQueue(BROKER)
    yield queue
    queue.close()


def test_the_worker_task_pins_and_answers_on_the_cms_queue(cms, identity, home, ledger, cms_queue):
    agent = Agent(identity, home, None, make_app(BROKER), ledger)
    register(agent)
    new = Ed25519PrivateKey.generate()
    document = roll(cms, new, 2)
    agent.app.tasks[keyroll.KEY_ROLL].run(document)  # the task body, as the worker calls it
    answer = cms_queue.next(keyroll.KEY_ROLL_RESULT, timeout=10)
    assert answer["roll_id"] == document["roll_id"] and answer["state"] == "pinned"
    protocol.verify_signature(answer, identity.sign_private_key.public_key(), "answer")
    assert Identity.load(home).cms_signing_keys[2] == _hex(new)
