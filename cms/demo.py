"""The `bin/start` demo: a virtual DESFire EV2 and a virtual JCOP 4 card provisioned through every real part.

Two halves. The Django half (`demo_setup`, `demo_approve`, run by `manage.py demo` inside the stack's
environment) creates, only when missing, the demo tenant's master keys (in Vault), a DESFire profile
in seed 003's style and a JCOP profile in seed 002's style, an MES service account with its API token
(kept in the instance folder, 0600, so a second start can post again), and one station per card with
an enrolment token; then it approves the enrolled stations as the bootstrap admin (audited).

The stack half (`DemoCard`, `card_state`, `agent_process`, `DemoRun`) has no Django: runstack uses it to
make the cards' state files, start the cards and the agents as supervised children, post one order
per card through the REST API (Idempotency-Key per card, so a second start does not duplicate it) and
report job states. One station per card: an agent consumes its station's whole queue, so two agents on
one station would take each other's jobs.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

AID = "F0D001"  # in the demo tenant's DESFire range (cms/bootstrap.py DEMO_TENANT)

# Seed 003: PICC master key changed from the transport key to a diversified AES key, applications
# with their own diversified master key and random read/write keys, files with access rights and data.
DESFIRE_SPEC = {
    "schema": 1, "chip_family": "desfire",
    "picc": {"transport_key": {"master": None, "key_type": "2k3des"},
             "master_key": {"policy": "diversified", "master": "demo-picc-master", "key_type": "aes128"},
             "key_settings": 0x0B},
    "applications": [
        {"aid": AID, "key_settings": 0x0B, "key_type": "aes128", "num_keys": 3,
         "keys": [{"key_no": 0, "role": "amk", "policy": "diversified", "master": "demo-app-master"},
                  {"key_no": 1, "role": "read", "policy": "random"},
                  {"key_no": 2, "role": "write", "policy": "random"}],
         "files": [{"file_no": 1, "type": "standard", "comm_mode": "full",
                    "access": {"read": 1, "write": 2, "read_write": 0, "change": 0},
                    "size": 32, "initial_data_hex": "C0FFEE"},
                   {"file_no": 3, "type": "value", "comm_mode": "full",
                    "access": {"read": 1, "write": 2, "read_write": 0, "change": 0},
                    "lower_limit": 0, "upper_limit": 1000, "initial_value": 10}]},
        {"aid": "F0D002", "key_settings": 0x0B, "key_type": "aes128", "num_keys": 2,
         "keys": [{"key_no": 0, "role": "amk", "policy": "diversified", "master": "demo-app-master"},
                  {"key_no": 1, "role": "read", "policy": "random"}],
         "files": [{"file_no": 2, "type": "standard", "comm_mode": "mac",
                    "access": {"read": 1, "write": 0, "read_write": 0, "change": 0},
                    "size": 16, "initial_data_hex": "0102030405060708"}]}]}

# Seed 002: SCP03 with the transport keys (the GP test key 40..4F), new KDF3-diversified ISD keys by
# PUT KEY, the tenant's STORE DATA, then the ISD locked.
JCOP_SPEC = {
    "schema": 1, "chip_family": "jcop",
    "isd": {"aid": "A000000151000000", "scp": "scp03", "security_level": 0x33,
            "transport_keys": {"master": "demo-gp-test-key", "kvn": 0x30},
            "new_keys": {"kvn": 0x31, "policy": "diversified", "master": "demo-isd-master",
                         "method": "kdf3"}},
    "store_data": [{"dgi": "0101", "data_hex": "D3E0C0DE"}], "lock": True}


@dataclass(frozen=True)
class DemoCard:
    """One virtual card of the demo, its station and its profile."""

    name: str       # card state file var/cards/<name>.json
    kind: str       # cardsim card type
    station: str    # station code, one per card
    profile: str    # demo profile name
    options: dict   # cardsim constructor options for a new card


CARDS = [
    DemoCard("desfire-ev2", "desfire-ev2", "demo-desfire", "demo-campus", {"picc_key_type": "des"}),
    DemoCard("jcop4", "jcop4", "demo-jcop", "demo-fob", {}),
]
PROFILES = {"demo-campus": DESFIRE_SPEC, "demo-fob": JCOP_SPEC}
TOKEN_FILE = "demo-api-token"


# ----------------------------------------------------------------------------- Django half

def demo_setup(*, instance_dir: Path) -> dict:
    """Create what is missing (idempotent); return profile ids, the API token, and stations to enrol."""
    from django.contrib.auth import get_user_model
    from django.db import transaction

    from cards.models import CardProfile, Station, Tenant
    from cards.services.access import api_token_issue, service_account_create
    from cards.services.profiles import profile_create
    from cards.services.stations import station_create, station_enrolment_reissue
    from cms.models import ServiceAccount
    from keys import services
    from keys.models import MasterKey

    admin = get_user_model().objects.filter(is_superuser=True, is_active=True).order_by("pk").first()
    tenant = Tenant.objects.filter(slug="demo").first()
    if admin is None or tenant is None:
        raise RuntimeError("the demo needs the bootstrap admin and the demo tenant (manage.py bootstrap)")
    token_file = instance_dir / TOKEN_FILE
    with transaction.atomic():
        for name, method in (("demo-picc-master", "an10922"), ("demo-app-master", "an10922"),
                             ("demo-isd-master", "kdf3")):
            if not MasterKey.objects.filter(tenant=tenant, name=name).exists():
                master = services.master_key_create(tenant=tenant, name=name, method=method, actor=admin)
                services.master_key_version_create(master=master, state="active", actor=admin)
        if not MasterKey.objects.filter(tenant=tenant, name="demo-gp-test-key").exists():
            master = services.master_key_create(tenant=tenant, name="demo-gp-test-key", method="kdf3",
                                                actor=admin)
            # The GlobalPlatform test key 40..4F: a public value, the transport key of demo cards.
            services.master_key_version_import(master=master, key=bytes(range(0x40, 0x50)), number=1,
                                               actor=admin)
        profiles = {}
        for name, spec in PROFILES.items():
            profile = CardProfile.objects.filter(tenant=tenant, name=name).order_by("-pk").first()
            if profile is None:
                profile = profile_create(actor=admin, tenant=tenant, name=name, spec=spec,
                                         description="bin/start demo")
            profiles[name] = profile.pk
        account = ServiceAccount.objects.filter(tenant=tenant, name="demo-mes").first()
        token = None
        if account is None or not token_file.exists():
            if account is None:
                account = service_account_create(actor=admin, tenant=tenant, name="demo-mes")
            _, token = api_token_issue(actor=admin, account=account, label="bin/start demo")
        stations = {}
        for card in CARDS:
            station = Station.objects.filter(code=card.station).first()
            enrol = None
            if station is None:
                station, enrol = station_create(actor=admin, tenant=tenant, code=card.station, line="demo",
                                                name=f"demo station for the virtual {card.kind}")
            elif station.status == "pending":
                station, enrol = station_enrolment_reissue(actor=admin, station=station)
            stations[card.station] = {"id": station.pk, "status": station.status, "enrolment_token": enrol}
    if token is not None:
        _write_private(token_file, token + "\n")
    return {"profiles": profiles, "stations": stations, "token_file": str(token_file)}


def demo_approve() -> dict:
    """Approve the demo stations that have enrolled (as the bootstrap admin: station_approve audits it)."""
    from django.contrib.auth import get_user_model

    from cards.models import Station
    from cards.services.stations import station_approve

    admin = get_user_model().objects.filter(is_superuser=True, is_active=True).order_by("pk").first()
    states = {}
    for card in CARDS:
        station = Station.objects.filter(code=card.station).first()
        if station is not None and station.status == "enrolled":
            station = station_approve(actor=admin, station=station)
        states[card.station] = station.status if station else None
    return states


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- stack half (no Django)

def card_state(card: DemoCard, cards_dir: Path) -> tuple[Path, str]:
    """The card's state file (made on the first start, reused after) and its UID in hex."""
    from cardsim.registry import open_card

    cards_dir.mkdir(parents=True, exist_ok=True)
    path = cards_dir / f"{card.name}.json"
    options = dict(card.options)
    if card.kind == "jcop4" and not path.exists():
        # Seed 002 diversifies with a 10-byte (triple-size) UID; the CMS refuses a shorter one.
        options["uid"] = b"\x04" + os.urandom(9)
    virtual = open_card(card.kind, path, **options)
    uid = virtual.identity.uid if card.kind == "jcop4" else virtual.uid
    return path, uid.hex().upper()


def agent_home(instance_dir: Path, card: DemoCard) -> Path:
    return instance_dir / "agents" / card.station


def enroll(*, cms_url: str, card: DemoCard, token: str, home: Path, cwd: Path) -> None:
    """`python -m readeragent enroll`, as a station would run it (replacing a half-done earlier identity)."""
    done = subprocess.run([sys.executable, "-m", "readeragent", "--home", str(home), "enroll",
                           "--cms", cms_url, "--station", card.station, "--token", token, "--force"],
                          cwd=cwd, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise DemoError(f"enrolment of station {card.station} failed: {done.stderr.strip()[-500:]}")


class DemoError(RuntimeError):
    """A demo step failed; the stack keeps running and says which step."""


FINISHED = {"succeeded", "failed", "refused", "interrupted", "quarantined", "cancelled", "expired"}


class DemoRun:
    """Orders through the REST API as an MES would, then job states as they change."""

    def __init__(self, url: str, token: str, say) -> None:
        self.url, self.say = url.rstrip("/"), say
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def order(self, *, profile_id: int, station_id: int, uid: str, card: DemoCard) -> dict:
        response = self.session.post(f"{self.url}/api/v1/orders/", timeout=30,
                                     headers={"Idempotency-Key": f"bin-start-demo-{card.name}-{uid}"},
                                     json={"profile": profile_id, "station": station_id, "uids": [uid]})
        if response.status_code not in (200, 201):
            raise DemoError(f"order for {card.name} refused: HTTP {response.status_code} "
                            f"{response.text[:300]}")
        order = response.json()
        again = "" if response.status_code == 201 else " (posted by an earlier start: same Idempotency-Key)"
        self.say(f"demo: order {order['id']} for the {card.kind} {uid} at station {card.station}: "
                 f"{order['state']}{again}")
        return order

    def jobs(self, uid: str) -> list[dict]:
        response = self.session.get(f"{self.url}/api/v1/jobs/", params={"card_uid": uid}, timeout=30)
        response.raise_for_status()
        body = response.json()
        return body["results"] if isinstance(body, dict) else body

    def succeeded(self, uid: str) -> dict | None:
        return next((job for job in self.jobs(uid) if job["state"] == "succeeded"), None)

    def follow(self, uids: dict[str, DemoCard], *, timeout: float, stopping) -> dict[str, str]:
        """Print each job state change until every card's latest job is finished (or timeout)."""
        seen: dict[int, str] = {}
        final: dict[str, str] = {}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not stopping() and len(final) < len(uids):
            for uid, card in uids.items():
                if uid in final:
                    continue
                try:
                    jobs = self.jobs(uid)
                except requests.RequestException:
                    continue
                for job in sorted(jobs, key=lambda j: j["id"]):
                    if seen.get(job["id"]) != job["state"]:
                        seen[job["id"]] = job["state"]
                        detail = f" ({job['error']})" if job.get("error") else ""
                        stage = f" at {job['stage_reached']}" if job.get("stage_reached") else ""
                        self.say(f"demo: job {job['id']} ({card.kind} {uid}): {job['state']}{stage}{detail}")
                if jobs and max(jobs, key=lambda j: j["id"])["state"] in FINISHED:
                    final[uid] = max(jobs, key=lambda j: j["id"])["state"]
            time.sleep(0.5)
        return final
