"""Issue 5's browser scenario with every part real: Debian's Chromium (Playwright) on the web UI of the CMS
stack (`manage.py runstack`: OpenBao, gunicorn, Celery worker and beat, private Redis), and a station
(`python -m readeragent run`, enrolled and approved) on a pcscd + vpcd reader holding a virtual DESFire EV2.

Two admins run a key rotation campaign from the browser (the creator cannot approve it; the second admin
confirms their password first), the card is presented at the station (taken out of the reader and put back)
and the campaign page, refreshing itself, shows it rotated; the rollback re-keys it back to its old keys at
the next presentation; revoked in the browser, the card is refused at the station. A card replaced in the
browser is refused too, and its replacement gets its profile the first time it is put in the reader.
Screenshots go to test-artifacts/screenshots/station-*.png.
"""
from __future__ import annotations

import os
import re
import time

import pytest

from cardsim.desfire import DESFireCard
from tests.e2e.conftest import cms_stack, enrolled_station  # noqa: F401  (fixtures)
from tests.e2e.station import agent_process, stop, wait_started
from tests.e2e.test_pipeline import _api, _order, _wait_job
from tests.web.test_browser import CHROMIUM, SHOTS, _login, _shot

pytestmark = [pytest.mark.browser, pytest.mark.pcsc, pytest.mark.vault, pytest.mark.slow,
              pytest.mark.xdist_group("pcsc")]

PASSWORD = "correct horse battery staple 7"
# Short enough that the second admin's approval, a while after signing in, asks for the password again.
REAUTH_WINDOW_SECONDS = 8

ADMINS = """
import json
from django.contrib.auth import get_user_model
from cards.models import Tenant
from cms.models import Membership
tenant = Tenant.objects.get(slug="demo")
for name in ("alice", "carol"):
    user, _ = get_user_model().objects.get_or_create(username=name)
    user.set_password(@PASSWORD@)
    user.save()
    Membership.objects.get_or_create(user=user, tenant=tenant, defaults={"role": "admin"})
print("E2E " + json.dumps({"admins": 2}))
""".replace("@PASSWORD@", repr(PASSWORD))

KCVS = """
import json
from keys.models import KeyVersion
rows = KeyVersion.objects.filter(slot__card__uid=@UID@, slot__role="app_key").select_related("slot")
print("E2E " + json.dumps(sorted([r.slot.key_no, r.number, r.state, r.kcv] for r in rows)))
"""

NEW_CMK_MASTER_VERSION = """
import json
from keys import services
from keys.models import MasterKey
version = services.master_key_version_create(master=MasterKey.objects.get(tenant__slug="demo",
                                             name="cmk-master"))
print("E2E " + json.dumps({"pk": version.pk, "number": version.number}))
"""

CMK_KCVS = """
import json
from keys.models import KeyVersion
rows = KeyVersion.objects.filter(slot__card__uid=@UID@, slot__role="cmk")
print("E2E " + json.dumps(sorted([r.number, r.state, r.kcv] for r in rows)))
"""


@pytest.fixture(scope="module")
def stack(request):
    """The e2e stack, started with a short re-authentication window (read from the environment)."""
    os.environ["REAUTH_WINDOW_SECONDS"] = str(REAUTH_WINDOW_SECONDS)
    try:
        started = request.getfixturevalue("cms_stack")
    finally:
        del os.environ["REAUTH_WINDOW_SECONDS"]
    started.shell(ADMINS)
    return started


@pytest.fixture
def chromium():
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=["--no-sandbox"] if os.geteuid() == 0 else [])
        try:
            yield browser
        finally:
            browser.close()


def _page(browser, url: str):
    page = browser.new_context(base_url=url, viewport={"width": 1280, "height": 900}).new_page()
    page.set_default_timeout(20_000)
    return page


def _press(page, selector: str, fill=lambda: None) -> bool:
    """Click a button that posts a form (after `fill` filled it in); if the CMS asks for the password first,
    give it, fill the form in again and press the button again (the action is never carried out behind
    the prompt). True if the password was asked."""
    fill()
    with page.expect_navigation():
        page.click(selector)
    if "/reauth/" not in page.url:
        return False
    _shot(page, "station-reauth")
    page.fill("input[name=password]", PASSWORD)
    with page.expect_navigation():
        page.click("main button[type=submit]")
    assert "/reauth/" not in page.url, page.content()
    fill()
    with page.expect_navigation():
        page.click(selector)
    return True


def _reload_until(page, selector: str, pattern: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while True:
        text = page.inner_text(selector)
        if re.search(pattern, text):
            return text
        if time.monotonic() > deadline:
            raise AssertionError(f"{selector} never matched {pattern!r}: {text!r}")
        time.sleep(1)
        page.reload()


def _present(reader) -> None:
    """Take the card out of the reader and put it back: the station reports a new presentation."""
    reader.bridge.remove()
    time.sleep(2.5)  # vpcd may not notice a card that comes back at once
    reader.bridge.insert()


def _jobs(stack, uid: str) -> list[dict]:
    body = _api(stack, "GET", "jobs/", params={"card_uid": uid}).json()
    return body["results"] if isinstance(body, dict) else body


def test_campaign_through_the_virtual_station_rollback_and_revoked_card_refused(
        stack, enrolled_station, pcsc_card, chromium):  # noqa: F811 - the imported fixture
    code, station_id, home = enrolled_station
    card = DESFireCard("ev2", picc_key_type="des")
    uid = card.uid.hex().upper()
    _order(stack, "campus", station_id, uid)
    reader = pcsc_card(card, connect=False)
    agent = agent_process(home, reader.reader, stack.broker)
    try:
        wait_started(agent, home / "agent.log")
        assert _wait_job(stack, uid)["state"] == "succeeded"
        first = stack.shell(KCVS.replace("@UID@", repr(uid)))
        assert [(key_no, number, state) for key_no, number, state, _ in first] == [(1, 1, "active"),
                                                                                  (2, 1, "active")]
        original_kcvs = {key_no: kcv for key_no, _, _, kcv in first}
        held_before = {k["key_no"]: k["version"] for k in card.keys_held()["f0d001"]}

        # alice creates the campaign and may not approve it herself
        alice = _page(chromium, stack.url)
        _login(alice, "alice")
        alice.wait_for_selector("h1:has-text('Dashboard')")
        alice.click("nav >> text=Key rotation")
        alice.fill("#id_name", f"app-keys-{uid}")
        alice.check("input[name=roles][value=app_key]")
        alice.select_option("#id_target", "random")
        alice.fill("#id_batch_size", "10")
        alice.fill("#id_grace_days", "7")
        _shot(alice, "station-campaign-new")
        with alice.expect_navigation():
            alice.click("#campaign-form button[type=submit]")
        alice.wait_for_selector("#campaign-state:has-text('Awaiting')")
        _press(alice, "#approve")
        alice.wait_for_selector("text=creator of a campaign cannot approve it")
        assert "Awaiting" in alice.inner_text("#campaign-state")
        _shot(alice, "station-campaign-creator-refused")
        campaign_url = alice.url

        # carol, the second admin, approves after confirming her password, and starts it
        carol = _page(chromium, stack.url)
        _login(carol, "carol")
        carol.wait_for_selector("h1:has-text('Dashboard')")
        time.sleep(REAUTH_WINDOW_SECONDS + 1)
        carol.goto(campaign_url)
        assert _press(carol, "#approve"), "approving did not ask for the password again"
        carol.wait_for_selector("#campaign-state:has-text('Approved')")
        _press(carol, "#start")
        carol.wait_for_selector("#campaign-state:has-text('running')")
        # the worker creates the batch's pending versions
        _reload_until(carol, "#progress", r"new version created 2")
        assert "rotated 0" in carol.inner_text("#progress")
        _shot(carol, "station-campaign-running")

        # the card is presented at the station; the page refreshes itself (no reload here)
        _present(reader)
        carol.wait_for_selector("#progress:has-text('rotated 2')", timeout=90_000)
        _shot(carol, "station-campaign-rotated")
        jobs = _jobs(stack, uid)
        assert [j["state"] for j in jobs] == ["succeeded", "succeeded"], jobs
        rotated = stack.shell(KCVS.replace("@UID@", repr(uid)))
        assert {(key_no, state) for key_no, number, state, _ in rotated if number == 2} == {(1, "active"),
                                                                                           (2, "active")}
        assert {k["key_no"]: k["version"] for k in card.keys_held()["f0d001"]} != held_before

        # roll back: the next presentation puts the old keys back on the card
        carol.reload()
        _press(carol, "#rollback")
        carol.wait_for_selector("#campaign-state:has-text('Rolled back')")
        assert "re-key back 2" in carol.inner_text("#progress")
        _shot(carol, "station-campaign-rolled-back")
        _present(reader)
        # the page refreshes itself while cards owe their old keys back
        carol.wait_for_selector("#progress:has-text('restored 2')", timeout=90_000)
        _shot(carol, "station-campaign-restored")
        restored = stack.shell(KCVS.replace("@UID@", repr(uid)))
        active = {key_no: kcv for key_no, _, state, kcv in restored if state == "active"}
        assert active == original_kcvs, restored  # the old keys, as new version numbers

        # the card page shows the old keys active again; carol revokes the card there
        carol.click("nav >> text=Cards")
        carol.click(f"text={uid}")
        body = carol.inner_text("main")
        assert all(f"active KCV {kcv}" in body for kcv in original_kcvs.values()), body
        _press(carol, "#revoke-form button[type=submit]",
               lambda: carol.select_option("#revoke-form select[name=reason]", "stolen"))
        carol.wait_for_selector("#card-state:has-text('revoked')")
        _shot(carol, "station-card-revoked")
        card_url = carol.url
        assert "stolen" in carol.inner_text("#card-state")
        key_commands = (0x0A, 0x1A, 0xAA, 0x71, 0x77, 0xC4)  # DESFire authenticate (all kinds), ChangeKey
        before = {ins: card.ins_counts.get(ins, 0) for ins in key_commands}

        # presented again: refused by the CMS, no job, nothing reaches the card
        _present(reader)
        carol.goto(f"/audit/?action=card.presentation_refused&card_uid={uid}")
        refused = _reload_until(carol, "main table", r"card\.presentation_refused", timeout=60)
        assert "revoked" in refused
        _shot(carol, "station-refused-audit")
        carol.goto(card_url)
        assert "card.presentation_refused" in carol.inner_text("main")
        assert len(_jobs(stack, uid)) == 3  # provisioning, rotation, re-key back; none for the refusal
        assert {ins: card.ins_counts.get(ins, 0) for ins in key_commands} == before
    finally:
        stop(agent)
        print((home / "agent.log").read_text(errors="replace")[-3000:])


def _swap(reader, card) -> None:
    """Take the card in the reader out and put another one in (the same reader, as at a real station)."""
    reader.bridge.remove()
    reader.bridge.card = reader.card = card
    time.sleep(2.5)
    reader.bridge.insert()


def test_replaced_card_is_revoked_and_its_replacement_gets_the_profile_at_the_station(
        stack, enrolled_station, pcsc_card, chromium):  # noqa: F811 - the imported fixture
    code, station_id, home = enrolled_station
    old, new = DESFireCard("ev2", picc_key_type="des"), DESFireCard("ev2", picc_key_type="des")
    old_uid, new_uid = old.uid.hex().upper(), new.uid.hex().upper()
    _order(stack, "campus", station_id, old_uid)
    reader = pcsc_card(old, connect=False)
    agent = agent_process(home, reader.reader, stack.broker)
    try:
        wait_started(agent, home / "agent.log")
        assert _wait_job(stack, old_uid)["state"] == "succeeded"

        alice = _page(chromium, stack.url)
        _login(alice, "alice")
        alice.wait_for_selector("h1:has-text('Dashboard')")
        alice.click("nav >> text=Cards")
        alice.click(f"text={old_uid}")

        def fill():
            alice.fill("#replace-form input[name=new_uid]", new_uid.lower())
            alice.select_option("#replace-form select[name=reason]", "damaged")

        _press(alice, "#replace-form button[type=submit]", fill)
        alice.wait_for_selector("#card-state:has-text('revoked')")
        assert "damaged" in alice.inner_text("#card-state")
        assert f"{new_uid} gets profile campus" in alice.inner_text("main")
        _shot(alice, "station-card-replaced")

        # the new card at the station: provisioned with the old card's profile, no MES order needed
        _swap(reader, new)
        assert _wait_job(stack, new_uid)["state"] == "succeeded"
        assert [k["version"] for k in new.keys_held()["f0d001"]] == [1, 1, 1]
        alice.click("nav >> text=Cards")
        alice.click(f"text={new_uid}")
        alice.wait_for_selector("#card-state:has-text('active')")
        body = alice.inner_text("main")
        assert "profile campus" in body and "card.replaced" in body and old_uid in body
        _shot(alice, "station-replacement-card")

        # the old card back at the station: refused, nothing reaches it
        def authentications() -> int:  # DESFire authenticate of every kind
            return sum(old.ins_counts.get(ins, 0) for ins in (0x0A, 0x1A, 0xAA, 0x71, 0x77))

        before = authentications()
        _swap(reader, old)
        alice.goto(f"/audit/?action=card.presentation_refused&card_uid={old_uid}")
        assert "revoked" in _reload_until(alice, "main table", r"card\.presentation_refused", timeout=60)
        _shot(alice, "station-replaced-card-refused")
        assert len(_jobs(stack, old_uid)) == 1 and authentications() == before
    finally:
        stop(agent)
        print((home / "agent.log").read_text(errors="replace")[-3000:])


def test_card_master_key_campaign_to_a_new_master_version_and_back(
        stack, enrolled_station, pcsc_card, chromium):  # noqa: F811 - the imported fixture
    """The PICC master key (diversified from cmk-master) moves to a new master key version when the card is
    presented, and back to the old one after the rollback."""
    code, station_id, home = enrolled_station
    card = DESFireCard("ev2", picc_key_type="des")
    uid = card.uid.hex().upper()
    _order(stack, "campus", station_id, uid)
    reader = pcsc_card(card, connect=False)
    agent = agent_process(home, reader.reader, stack.broker)
    try:
        wait_started(agent, home / "agent.log")
        assert _wait_job(stack, uid)["state"] == "succeeded"
        [(_, _, original_kcv)] = stack.shell(CMK_KCVS.replace("@UID@", repr(uid)))
        master = stack.shell(NEW_CMK_MASTER_VERSION)

        alice = _page(chromium, stack.url)
        _login(alice, "alice")
        alice.wait_for_selector("h1:has-text('Dashboard')")
        alice.click("nav >> text=Key rotation")
        alice.fill("#id_name", f"cmk-{uid}")
        alice.check("input[name=roles][value=cmk]")
        alice.select_option("#id_target", "master_version")
        alice.select_option("#id_master_version", str(master["pk"]))
        alice.fill("#id_batch_size", "10")
        alice.fill("#id_grace_days", "7")
        with alice.expect_navigation():
            alice.click("#campaign-form button[type=submit]")
        alice.wait_for_selector("#campaign-state:has-text('Awaiting')")
        campaign_url = alice.url
        carol = _page(chromium, stack.url)
        _login(carol, "carol")
        carol.goto(campaign_url)
        _press(carol, "#approve")
        carol.wait_for_selector("#campaign-state:has-text('Approved')")
        _press(carol, "#start")
        carol.wait_for_selector("#campaign-state:has-text('running')")
        _reload_until(carol, "#progress", r"waiting for batch 0")  # every pending version created

        _present(reader)
        carol.wait_for_selector("#progress:has-text('rotated 1')", timeout=90_000)
        _shot(carol, "station-cmk-campaign-rotated")
        ledger = stack.shell(CMK_KCVS.replace("@UID@", repr(uid)))
        [(number, new_kcv)] = [(n, kcv) for n, state, kcv in ledger if state == "active"]
        assert number == 2 and new_kcv != original_kcv, ledger
        assert card.keys_held()["000000"][0]["family"] == "aes"

        _press(carol, "#rollback")
        carol.wait_for_selector("#campaign-state:has-text('Rolled back')")
        assert "re-key back 1" in carol.inner_text("#progress")
        _present(reader)
        carol.wait_for_selector("#progress:has-text('restored 1')", timeout=90_000)
        _shot(carol, "station-cmk-campaign-restored")
        ledger = stack.shell(CMK_KCVS.replace("@UID@", repr(uid)))
        assert [kcv for _, state, kcv in ledger if state == "active"] == [original_kcv], ledger
        assert [j["state"] for j in _jobs(stack, uid)] == ["succeeded"] * 3
    finally:
        stop(agent)
        print((home / "agent.log").read_text(errors="replace")[-3000:])
