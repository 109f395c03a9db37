"""End to end, every part real: an MES order through the REST API, the CMS stack (`manage.py runstack`:
OpenBao, gunicorn, Celery worker) on Redis, a station enrolled with `python -m readeragent enroll` over
HTTP and approved, `python -m readeragent run` on a pcscd reader holding a vpcd virtual card. The card is
presented, the CMS sends a sealed and signed job, the agent runs it, the result moves the key ledger.
"""
from __future__ import annotations

import json
import secrets
import time

import pytest
import requests

from cardsim.desfire import DESFireCard
from readeragent.worker import make_app

from .station import agent_process, stop, wait_started

pytestmark = [pytest.mark.pcsc, pytest.mark.vault, pytest.mark.slow, pytest.mark.xdist_group("pcsc")]
AID = "F0D001"  # in the demo tenant's DESFire range (cms/bootstrap.py)

DESFIRE_SPEC = {
    "schema": 1, "chip_family": "desfire",
    "picc": {"transport_key": {"master": None, "key_type": "2k3des"},
             "master_key": {"policy": "diversified", "master": "cmk-master", "key_type": "aes128"},
             "key_settings": 0x0B},
    "applications": [{
        "aid": AID, "key_settings": 0x0B, "key_type": "aes128", "num_keys": 3,
        "keys": [{"key_no": 0, "role": "amk", "policy": "diversified", "master": "amk-master"},
                 {"key_no": 1, "role": "read", "policy": "random"},
                 {"key_no": 2, "role": "write", "policy": "random"}],
        "files": [{"file_no": 1, "type": "standard", "comm_mode": "full",
                   "access": {"read": 1, "write": 2, "read_write": 0, "change": 0},
                   "size": 32, "initial_data_hex": "C0FFEE"},
                  {"file_no": 3, "type": "value", "comm_mode": "full",
                   "access": {"read": 1, "write": 2, "read_write": 0, "change": 0},
                   "lower_limit": 0, "upper_limit": 1000, "initial_value": 10}]}]}

JCOP_SPEC = {
    "schema": 1, "chip_family": "jcop",
    "isd": {"aid": "A000000151000000", "scp": "scp03", "security_level": 0x33,
            "transport_keys": {"master": "gp-test-key", "kvn": 0x30},
            "new_keys": {"kvn": 0x31, "policy": "diversified", "master": "isd-master", "method": "kdf3"}},
    "store_data": [{"dgi": "0101", "data_hex": "F1E2D3C4"}], "lock": True}

SETUP = """
import json
from django.contrib.auth import get_user_model
from cards.models import Tenant, CardProfile
from cards.services.access import service_account_create, api_token_issue
from cards.services.profiles import profile_create
from keys import services
from keys.models import MasterKey
admin = get_user_model().objects.filter(is_superuser=True).order_by("pk").first()
tenant = Tenant.objects.get(slug="demo")
if not MasterKey.objects.filter(tenant=tenant).exists():
    for name, method in (("cmk-master", "an10922"), ("amk-master", "an10922"), ("isd-master", "kdf3")):
        services.master_key_version_create(master=services.master_key_create(tenant=tenant, name=name,
                                           method=method, actor=admin), state="active", actor=admin)
    services.master_key_version_import(master=services.master_key_create(tenant=tenant, name="gp-test-key",
                                       method="kdf3", actor=admin), key=bytes(range(0x40, 0x50)), number=1,
                                       actor=admin)
    profile_create(actor=admin, tenant=tenant, name="campus", spec=json.loads(@DESFIRE@))
    profile_create(actor=admin, tenant=tenant, name="fob", spec=json.loads(@JCOP@))
    account = service_account_create(actor=admin, tenant=tenant, name="mes")
    _, token = api_token_issue(actor=admin, account=account)
else:
    token = None
profiles = {p.name: p.pk for p in CardProfile.objects.filter(tenant=tenant)}
print("E2E " + json.dumps({"token": token, "profiles": profiles}))
""".replace("@DESFIRE@", repr(json.dumps(DESFIRE_SPEC))).replace("@JCOP@", repr(json.dumps(JCOP_SPEC)))

NEW_STATION = """
import json
from django.contrib.auth import get_user_model
from cards.models import Tenant
from cards.services.stations import station_create
admin = get_user_model().objects.filter(is_superuser=True).order_by("pk").first()
station, token = station_create(actor=admin, tenant=Tenant.objects.get(slug="demo"), code=@CODE@, line="l1")
print("E2E " + json.dumps({"id": station.pk, "token": token}))
"""

APPROVE = """
import json
from django.contrib.auth import get_user_model
from cards.models import Station
from cards.services.stations import station_approve
admin = get_user_model().objects.filter(is_superuser=True).order_by("pk").first()
station = station_approve(actor=admin, station=Station.objects.get(code=@CODE@))
print("E2E " + json.dumps({"status": station.status, "sign": station.sign_public_key}))
"""

LEDGER = """
import json
from keys.models import KeyVersion
rows = KeyVersion.objects.filter(slot__card__uid=@UID@).select_related("slot", "slot__application")
print("E2E " + json.dumps(sorted([r.slot.role, r.slot.key_no, r.number, r.state] for r in rows)))
"""


def _api(stack, method, path, **kw):
    """A call to the stack's API; a stack that no longer answers fails the test with runstack's state and
    the end of its log (which child exited, with what status), not only requests' connection error."""
    headers = {"Authorization": f"Bearer {stack.data['token']}", **kw.pop("headers", {})}
    try:
        return requests.request(method, f"{stack.url}/api/v1/{path}", headers=headers, timeout=20, **kw)
    except requests.ConnectionError as error:
        code = stack.process.poll()
        state = "still running" if code is None else f"exited with status {code}"
        raise AssertionError(f"the stack at {stack.url} does not answer {method} {path} ({error}); runstack "
                             f"{state}; the end of its log:\n{stack.tail(8000)}") from None


def _order(stack, profile: str, station_id: int, uid: str) -> dict:
    response = _api(stack, "POST", "orders/", headers={"Idempotency-Key": secrets.token_hex(8)},
                    json={"profile": stack.data["profiles"][profile], "station": station_id, "uids": [uid]})
    assert response.status_code in (200, 201), response.text
    return response.json()


def _wait_job(stack, uid: str, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    jobs: list = []
    while time.monotonic() < deadline:
        response = _api(stack, "GET", "jobs/", params={"card_uid": uid})
        assert response.status_code == 200, response.text
        body = response.json()
        jobs = body["results"] if isinstance(body, dict) else body
        finished = [j for j in jobs if j["state"] not in ("created", "dispatched", "running", "pending")]
        if finished:
            return finished[0]
        time.sleep(0.5)
    raise TimeoutError(f"no finished job for {uid} in {timeout} s: {jobs}\n{stack.tail()}")


def _run_card(cms_stack, enrolled_station, pcsc_card, card, profile: str, uid: str):
    code, station_id, home = enrolled_station
    _order(cms_stack, profile, station_id, uid)
    reader = pcsc_card(card, connect=False)
    agent = agent_process(home, reader.reader, cms_stack.broker)
    try:
        wait_started(agent, home / "agent.log")
        job = _wait_job(cms_stack, uid)
        detail = _api(cms_stack, "GET", f"jobs/{job['id']}/").json()
        return job, detail, reader, home
    finally:
        stop(agent)
        print((home / "agent.log").read_text(errors="replace")[-3000:])


@pytest.mark.parametrize("flavour", ["ev2", "ev1", "ev3"])
def test_desfire_order_to_active_ledger(cms_stack, enrolled_station, pcsc_card, flavour):
    card = DESFireCard(flavour, picc_key_type="des")
    uid = card.uid.hex().upper()
    job, detail, reader, home = _run_card(cms_stack, enrolled_station, pcsc_card, card, "campus", uid)

    assert job["state"] == "succeeded", detail
    ledger = cms_stack.shell(LEDGER.replace("@UID@", repr(uid)))
    assert ledger and all(state == "active" for *_, state in ledger), ledger
    assert {(role, key_no) for role, key_no, *_ in ledger} == {("cmk", 0), ("amk", 0), ("app_key", 1),
                                                                ("app_key", 2)}
    held = card.keys_held()
    assert held["000000"][0]["family"] == "aes"
    assert [k["version"] for k in held[AID.lower()]] == [1, 1, 1]
    change_keys = [e for e in detail["trace"] if e["direction"] == "TX" and e["apdu_hex"].startswith("90C4")]
    assert change_keys and all(e["redacted"] and "redacted" in e["apdu_hex"] for e in change_keys)


@pytest.mark.parametrize("uid_size", [7, 10])
def test_jcop4_order_to_active_ledger(cms_stack, enrolled_station, pcsc_card, uid_size):
    from cardsim.jcop import JCOP4Card

    # Seed 002: the ISD keys are KDF3-diversified with 10 bytes of context: the card's KDD, which the
    # agent's monitor reads with GET DATA CF (GP Card Spec 2.3), so the default 7-byte-UID card works;
    # a triple-size 10-byte UID is the second case (its KDD still wins).
    extra = {} if uid_size == 7 else {"uid": bytes.fromhex("04") + secrets.token_bytes(9)}
    card = JCOP4Card(seed=secrets.token_hex(4), **extra)
    assert len(card.identity.uid) == uid_size
    uid = card.identity.uid.hex().upper()
    job, detail, reader, home = _run_card(cms_stack, enrolled_station, pcsc_card, card, "fob", uid)

    assert job["state"] == "succeeded", detail
    kdd = cms_stack.shell("import json; from cards.models import Card; "
                          f"print('E2E ' + json.dumps(Card.objects.get(uid={uid!r}).kdd))")
    assert kdd == card.identity.kdd.hex().upper(), kdd  # the monitor's GET DATA CF reached the CMS
    ledger = cms_stack.shell(LEDGER.replace("@UID@", repr(uid)))
    assert sorted(role for role, *_ in ledger) == ["isd_dek", "isd_enc", "isd_mac"]
    assert all(state == "active" for *_, state in ledger), ledger
    assert 0x31 in {k["kvn"] for k in card.keys_held()["a000000151000000"]}
    assert card.life_cycle == 0x7F  # CARD_LOCKED, through SECURED (seed 002's ISD lock)


def test_redelivered_job_writes_the_card_once(cms_stack, enrolled_station, pcsc_card):
    """The broker hands the agent the same job twice (a lost ack): the agent's ledger refuses the copy."""
    import redis

    from readeragent.identity import Identity
    from readeragent.monitor import make_report

    card = DESFireCard("ev2", picc_key_type="des")
    uid = card.uid.hex().upper()
    code, station_id, home = enrolled_station
    _order(cms_stack, "campus", station_id, uid)
    # The station reports the card (signed with its enrolled key) before its worker runs, so the
    # job waits on the station queue, where the test puts a second copy of the very same message.
    identity = Identity.load(home)
    make_app(cms_stack.broker).send_task("cms.station_report", queue="cms", args=[
        make_report(identity, "card_presented", "e2e", uid=uid, atr=card.atr.hex().upper(),
                    chip_type="desfire_ev2")])
    client = redis.Redis.from_url(cms_stack.broker)
    queue = f"station.{code}"
    deadline = time.monotonic() + 60
    while not client.llen(queue) and time.monotonic() < deadline:
        time.sleep(0.2)
    raw = client.lindex(queue, 0)
    assert raw is not None, f"the CMS sent no job to {queue}:\n{cms_stack.tail()}"
    client.lpush(queue, raw)
    assert client.llen(queue) == 2

    reader = pcsc_card(card, connect=False)
    agent = agent_process(home, reader.reader, cms_stack.broker)
    try:
        wait_started(agent, home / "agent.log")
        job = _wait_job(cms_stack, uid)
        if job["state"] != "succeeded":
            detail = _api(cms_stack, "GET", f"jobs/{job['id']}/").json()
            agent_log = (home / "agent.log").read_text(errors="replace")[-4000:]
            pytest.fail(f"{detail}\n--- agent.log ---\n{agent_log}\n--- stack.log ---\n{cms_stack.tail()}")
        deadline = time.monotonic() + 30
        while client.llen(queue) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2)  # the copy is run (refused) and its result recorded
        log = (home / "agent.log").read_text(errors="replace")
        assert "refused" in log, log[-3000:]
    finally:
        stop(agent)
    from readeragent.ledger import ReplayLedger

    ledger = ReplayLedger.in_home(home)
    assert ledger.counts() == {"succeeded": 1}
    ledger.close()
    # one ChangeKey per key slot (PICC + three application keys), none of them twice
    assert card.ins_counts.get(0xC4) == 4


def test_wrong_transport_key_quarantines_the_card_after_one_authentication(cms_stack, enrolled_station,
                                                                           pcsc_card):
    """The card's PICC key is not the transport key the CMS believes: one authenticate, the job fails,
    the card is quarantined, and putting it back gets it no job and no further authentication."""
    card = DESFireCard("ev2", picc_key_type="des", picc_key=bytes(range(16)))
    uid = card.uid.hex().upper()
    code, station_id, home = enrolled_station
    _order(cms_stack, "campus", station_id, uid)
    reader = pcsc_card(card, connect=False)
    agent = agent_process(home, reader.reader, cms_stack.broker)
    try:
        wait_started(agent, home / "agent.log")
        job = _wait_job(cms_stack, uid)
        assert job["state"] == "failed"
        detail = _api(cms_stack, "GET", f"jobs/{job['id']}/").json()
        assert detail["error"]["authentication"] is True and detail["error"]["op"] == "desfire.authenticate"
        assert card.ins_counts.get(0x1A) == 1
        cards = _api(cms_stack, "GET", "cards/", params={"uid": uid}).json()
        cards = cards["results"] if isinstance(cards, dict) else cards
        assert [c["state"] for c in cards if c["uid"] == uid] == ["quarantined"]
        reader.bridge.remove()
        time.sleep(2.5)
        reader.bridge.insert()  # presented again: refused by the CMS, nothing reaches the card
        time.sleep(5)
        assert len(_api(cms_stack, "GET", "jobs/", params={"card_uid": uid}).json()["results"]) == 1
        assert card.ins_counts.get(0x1A) == 1
    finally:
        stop(agent)
