"""Fixtures for the CMS side of provisioning: real OpenBao (`vault`), a tenant with master keys and profiles,
an approved station whose key pairs the test holds, and a station double that plays the agent's side of
`readeragent.protocol` (verify, unseal, answer with a signed result)."""
from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass, field

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from readeragent import protocol

GP_TEST_KEY = bytes.fromhex("404142434445464748494A4B4C4D4E4F")  # GlobalPlatform test key 40..4F
DESFIRE_UID = "04782E21801D80"
JCOP_UID = "00010203040506070809"

DESFIRE_SPEC = {
    "schema": 1, "chip_family": "desfire",
    "picc": {"transport_key": {"master": None, "key_type": "2k3des"},
             "master_key": {"policy": "diversified", "master": "cmk-master", "key_type": "aes128"},
             "key_settings": 0x0B},
    "applications": [{
        "aid": "F0A001", "key_settings": 0x0B, "key_type": "aes128", "num_keys": 3,
        "keys": [{"key_no": 0, "role": "amk", "policy": "diversified", "master": "amk-master"},
                 {"key_no": 1, "role": "read", "policy": "random"},
                 {"key_no": 2, "role": "write", "policy": "random"}],
        "files": [{"file_no": 1, "type": "standard", "comm_mode": "full",
                   "access": {"read": 1, "write": 2, "read_write": 0, "change": 0},
                   "size": 32, "initial_data_hex": "C0FFEE"},
                  {"file_no": 2, "type": "backup", "comm_mode": "mac",
                   "access": {"read": 1, "write": 0, "read_write": 0, "change": 0},
                   "size": 16, "initial_data_hex": "0102"},
                  {"file_no": 3, "type": "value", "comm_mode": "full",
                   "access": {"read": 1, "write": 2, "read_write": 0, "change": 0},
                   "lower_limit": 0, "upper_limit": 1000, "initial_value": 10}]}]}

JCOP_SPEC = {
    "schema": 1, "chip_family": "jcop",
    "isd": {"aid": "A000000151000000", "scp": "scp03", "security_level": 0x33,
            "transport_keys": {"master": "gp-test-key", "kvn": 0x30},
            "new_keys": {"kvn": 0x31, "policy": "diversified", "master": "isd-master", "method": "kdf3"}},
    "store_data": [{"dgi": "0101", "data_hex": "F1E2D3C4"}],
    "lock": True}


@pytest.fixture
def acme(db, vault):
    from cards.models import Tenant

    return Tenant.objects.create(slug="acme", name="Acme", gp_aid_prefix="A00000061700CAFE0001",
                                 desfire_aid_first=0xF0A000, desfire_aid_last=0xF0AFFF)


@pytest.fixture
def globex(db, vault):
    from cards.models import Tenant

    return Tenant.objects.create(slug="globex", name="Globex", gp_aid_prefix="A00000061700BEEF0001",
                                 desfire_aid_first=0xF0B000, desfire_aid_last=0xF0BFFF)


@pytest.fixture
def masters(acme):
    """Active master key versions: AN10922 for the DESFire CMK/AMK, KDF3 for the ISD, the GP test key."""
    from keys import services

    out = {}
    for name, method in (("cmk-master", "an10922"), ("amk-master", "an10922"), ("isd-master", "kdf3")):
        master = services.master_key_create(tenant=acme, name=name, method=method)
        out[name] = services.master_key_version_create(master=master, state="active")
    transport = services.master_key_create(tenant=acme, name="gp-test-key", method="kdf3")
    out["gp-test-key"] = services.master_key_version_import(master=transport, key=GP_TEST_KEY, number=1)
    return out


@pytest.fixture
def desfire_profile(acme, masters):
    from cards.models import CardProfile

    return CardProfile.objects.create(tenant=acme, name="campus", chip_family="desfire", spec=DESFIRE_SPEC)


@pytest.fixture
def jcop_profile(acme, masters):
    from cards.models import CardProfile

    return CardProfile.objects.create(tenant=acme, name="fob", chip_family="jcop", spec=JCOP_SPEC)


@dataclass
class StationDouble:
    """The agent's side of the protocol, with key pairs made here (as `readeragent enroll` would)."""

    code: str
    hpke: X25519PrivateKey = field(default_factory=X25519PrivateKey.generate)
    sign: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    model: object = None

    @property
    def hpke_public_hex(self) -> str:
        return protocol.public_bytes_x25519(self.hpke.public_key()).hex()

    @property
    def sign_public_hex(self) -> str:
        return protocol.public_bytes_ed25519(self.sign.public_key()).hex()

    def report(self, kind: str, *, uid: str = "", atr: str = "3B8180018080", at: float | None = None,
               nonce: str | None = None, **extra) -> dict:
        report = {"v": 1, "type": kind, "station": self.code, "reader": "Virtual PCD 00 00",
                  "at": int(at if at is not None else time.time()), "nonce": nonce or secrets.token_hex(8),
                  **extra}
        if kind == "card_presented":
            report.update(uid=uid, atr=atr)
        return protocol.sign_with(report, self.sign)

    def open(self, envelope: dict) -> dict[str, bytearray]:
        """What the agent does first: verify (CMS key from Vault Transit, via keys.signing) and unseal."""
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey as Pub

        from keys import signing

        raw, _ = signing.public_key(envelope["signing_key_version"])
        protocol.check_envelope(envelope, station=self.code, cms_public_key=Pub.from_public_bytes(raw))
        return protocol.open_keys(envelope["sealed_keys"], private_key=self.hpke, job_id=envelope["job_id"],
                                  station=self.code, expires_at=envelope["expires_at"])

    def result(self, envelope: dict, *, state: str = "succeeded", statuses: dict[int, str] | None = None,
               upto: int | None = None, error: dict | None = None, observed: dict[int, dict] | None = None,
               sign_with: Ed25519PrivateKey | None = None, **override) -> dict:
        """A signed result: steps 0..upto-1 done (all by default), `statuses` overriding single steps."""
        steps = envelope["script"]["steps"]
        count = len(steps) if upto is None else upto
        entries = []
        for index in range(count):
            step = steps[index]
            entry = {"index": index, "op": step["op"], "status": (statuses or {}).get(index, "done")}
            if "confirms" in step:
                entry["confirms"] = step["confirms"]
            if observed and index in observed:
                entry["observed"] = observed[index]
            entries.append(entry)
        for index, status in (statuses or {}).items():
            if index >= count:
                step = steps[index]
                entries.append({"index": index, "op": step["op"], "status": status,
                                "confirms": step.get("confirms", {})})
        doc = {"v": 1, "job_id": envelope["job_id"], "station": self.code, "state": state, "steps": entries,
               "steps_done": sum(1 for e in entries if e["status"] == "done"),
               "stage": entries[-1]["op"] if entries else "", "error": error,
               "trace": [{"step": 0, "direction": "TX", "apdu_hex": "00A4040000", "redacted": False},
                         {"step": 0, "direction": "RX", "apdu_hex": "9000", "redacted": False}],
               "started_at": int(time.time()), "finished_at": int(time.time()), **override}
        return protocol.sign_with(doc, sign_with or self.sign)


@pytest.fixture
def station(acme):
    from cards.models import Station

    double = StationDouble(code=f"line4-{os.getpid()}-{secrets.token_hex(3)}")
    double.model = Station.objects.create(tenant=acme, code=double.code, line="line-4", status="approved",
                                          hpke_public_key=double.hpke_public_hex,
                                          sign_public_key=double.sign_public_hex)
    return double


@pytest.fixture
def sent(monkeypatch):
    """Envelopes the CMS dispatches, captured here instead of the broker (test_redis covers the broker)."""
    from cards.services import jobs

    out: list[tuple[str, dict]] = []
    monkeypatch.setattr(jobs, "dispatch", lambda queue, envelope: out.append((queue, envelope)))
    return out


@pytest.fixture
def order_for(acme, station):
    from cards.models import Order

    def make(profile, quantity=1, uids=None, key=None):
        return Order.objects.create(tenant=acme, profile=profile, station=station.model, quantity=quantity,
                                    uids=uids or [], idempotency_key=key or secrets.token_hex(6),
                                    request_fingerprint="0" * 64)
    return make


def cms_public_key() -> Ed25519PublicKey:
    from keys import signing

    raw, _ = signing.public_key()
    return Ed25519PublicKey.from_public_bytes(raw)


@pytest.fixture
def cms(django_capture_on_commit_callbacks, sent):
    """Runs the CMS Celery tasks' functions directly (as an eager worker would), committing callbacks."""
    from cards import tasks

    class Cms:
        def report(self, report: dict) -> dict:
            with django_capture_on_commit_callbacks(execute=True):
                return tasks.station_report.run(report)

        def result(self, result: dict) -> dict:
            with django_capture_on_commit_callbacks(execute=True):
                return tasks.job_result.run(result)

        def last_envelope(self) -> dict:
            return sent[-1][1]

    return Cms()


@pytest.fixture
def vault_calls(monkeypatch):
    """Every Vault API request the code makes (method, path); the requests still go to OpenBao."""
    from cms import vault as cms_vault

    calls: list[tuple[str, str]] = []
    real = cms_vault.call

    def recording(method, path, body=None, *, what):
        calls.append((method, path))
        return real(method, path, body, what=what)

    monkeypatch.setattr(cms_vault, "call", recording)
    return calls
