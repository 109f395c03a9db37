"""Station-side fixtures: a station identity, a CMS signing key, a replay ledger, and job envelopes.

The CMS half is played with `readeragent.protocol` itself (seal_keys, sign_with), exactly as
cards/tasks.py does it; the card is an in-process `cardsim` virtual card.
"""
from __future__ import annotations

import time
import uuid

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cardproto.errors import CardRemovedError
from cardsim.base import CardRemoved
from readeragent import protocol
from readeragent.identity import Identity
from readeragent.ledger import ReplayLedger

STATION = "line1-st1"
# The real Redis database the agent tests publish to; test_worker, test_outbox and test_keyroll read or fill
# its queue "cms", so they are one xdist group (`pytestmark = SHARES_CMS_QUEUE`): one worker runs them, one
# at a time (under --dist loadgroup; two at once took each other's job results).
BROKER = "redis://127.0.0.1:6379/14"
SHARES_CMS_QUEUE = pytest.mark.xdist_group("redis-db14-cms-queue")


class VirtualTransport:
    """An in-process virtual card as a Transport; a fault-plan removal is a CardRemovedError, as pcscd's."""

    def __init__(self, card) -> None:
        self.card = card

    def transmit(self, apdu: bytes) -> bytes:
        try:
            return self.card.transmit(apdu)
        except CardRemoved:
            raise CardRemovedError("card removed during command", apdu=apdu[:5]) from None


class Cms:
    """The CMS's half of the contract: an Ed25519 signing key (version 1) and envelope building."""

    def __init__(self, identity: Identity) -> None:
        self.key = Ed25519PrivateKey.generate()
        self.version = 1
        self.identity = identity
        identity.cms_signing_keys = {1: protocol.public_bytes_ed25519(self.key.public_key()).hex()}

    def envelope(self, script_steps: list, keys: dict, *, uid: str, chip_type: str = "desfire_ev2",
                 ttl: int = 30, job_id: str | None = None, station: str | None = None,
                 seal_station: str | None = None, **overrides) -> dict:
        job_id = job_id or str(uuid.uuid4())
        station = station or self.identity.station
        issued = int(time.time())
        script = {"version": protocol.SCRIPT_VERSION, "steps": script_steps}
        envelope = {
            "v": 1, "job_id": job_id, "station": station, "tenant": "acme", "issued_at": issued,
            "expires_at": issued + ttl, "card": {"uid": uid, "chip_type": chip_type}, "script": script,
            "script_digest": protocol.script_digest(script), "signing_key_version": self.version,
            "sealed_keys": protocol.seal_keys(keys, public_key=self.identity.hpke_private_key.public_key(),
                                              job_id=job_id, station=seal_station or station,
                                              expires_at=issued + ttl)}
        envelope.update(overrides)
        return protocol.sign_with(envelope, self.key)


@pytest.fixture
def identity() -> Identity:
    return Identity.generate(STATION, "http://cms.invalid")


@pytest.fixture
def cms(identity) -> Cms:
    return Cms(identity)


@pytest.fixture
def ledger(tmp_path) -> ReplayLedger:
    ledger = ReplayLedger.in_home(tmp_path / "agent")
    yield ledger
    ledger.close()
