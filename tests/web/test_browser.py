"""The web UI in Debian's Chromium (Playwright, headless) against a live server and the real OpenBao.

Screenshots of the key pages go to test-artifacts/screenshots/ (kept by CI as artifacts).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.db import connections

from tests.web.conftest import PASSWORD, make_user

CHROMIUM = "/usr/bin/chromium"  # Debian's package, installed by bin/setup --dev
SHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"

pytestmark = pytest.mark.browser


@pytest.fixture
def eager_celery():
    from cms.celery import app

    before = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = before


@pytest.fixture
def browser(monkeypatch):
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop in this thread; the ORM calls the test itself makes
    # run outside it in practice, but Django cannot tell, so it is told.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                              args=["--no-sandbox"] if os.geteuid() == 0 else [])
        try:
            yield chromium
        finally:
            # With Playwright's loop running, asgiref gives the test's ORM calls connections of
            # their own (context-local); close them here, or the test database cannot be dropped.
            connections.close_all()
            chromium.close()


def _page(browser, live_server):
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    return page


def _login(page, username: str, password: str = PASSWORD):
    page.goto("/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")


def _shot(page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_login_and_lockout_after_repeated_failures(live_server, browser, acme, settings):
    make_user("alice", [(acme, "admin")], password=PASSWORD)
    page = _page(browser, live_server)
    page.goto("/")
    assert "/login/" in page.url
    _shot(page, "login")
    _login(page, "alice")
    page.wait_for_selector("h1:has-text('Dashboard')")
    _shot(page, "dashboard")

    other = _page(browser, live_server)
    for _ in range(settings.AXES_FAILURE_LIMIT):
        _login(other, "alice", "wrong-wrong-wrong")
        assert other.locator("text=correct username and password").count() or "locked" in other.content()
    _login(other, "alice")  # the right password no longer helps
    assert other.locator("#locked").is_visible()
    _shot(other, "locked-out")


def test_campaign_needs_a_second_admin_and_shows_progress(live_server, browser, acme, eager_celery):
    from cards.models import Card
    from keys import campaigns, services
    from keys.models import KeySlot

    make_user("alice", [(acme, "admin")], password=PASSWORD)
    make_user("carol", [(acme, "admin")], password=PASSWORD)
    cards = []
    for n in range(3):
        card = Card.objects.create(tenant=acme, uid=f"04B0000000000{n}", chip_type="desfire_ev3",
                                   state="active")
        slot = KeySlot.objects.create(tenant=acme, card=card, role="cmk", key_no=0)
        services.key_version_create_random(slot=slot, state="active")
        cards.append(card)

    alice = _page(browser, live_server)
    _login(alice, "alice")
    alice.click("nav >> text=Key rotation")
    alice.fill("#id_name", "cmk-rotation-2026")
    alice.check("input[name=roles][value=cmk]")
    alice.select_option("#id_target", "random")
    alice.fill("#id_batch_size", "2")
    alice.fill("#id_grace_days", "14")
    _shot(alice, "campaign-new")
    alice.click("#campaign-form button[type=submit]")
    alice.wait_for_selector("#campaign-state:has-text('Awaiting')")
    alice.click("#approve")
    alice.wait_for_selector("text=creator of a campaign cannot approve it")
    assert "Awaiting" in alice.inner_text("#campaign-state")
    _shot(alice, "campaign-creator-refused")
    campaign_url = alice.url

    carol = _page(browser, live_server)
    _login(carol, "carol")
    carol.goto(campaign_url)
    carol.click("#approve")
    carol.wait_for_selector("#campaign-state:has-text('Approved')")
    carol.click("#start")
    carol.wait_for_selector("#campaign-state:has-text('running')")
    assert "pending 3" in carol.inner_text("#progress")

    # Two cards are presented and confirm their new key (the job result handler's call).
    for card in cards[:2]:
        owed = campaigns.versions_owed(card)
        campaigns.campaign_card_rotated(version=owed[0].target)
    carol.reload()
    progress = carol.inner_text("#progress")
    assert "rotated 2" in progress and "pending 1" in progress
    _shot(carol, "campaign-progress")

    carol.click("#rollback")
    carol.wait_for_selector("#campaign-state:has-text('Rolled back')")
    progress = carol.inner_text("#progress")
    assert "re-key back 2" in progress and "cancelled 1" in progress
    _shot(carol, "campaign-rolled-back")
    # the two rotated cards now owe their old key back; the third was never touched
    assert [len(campaigns.versions_owed(card)) for card in cards] == [1, 1, 0]

    carol.click("nav >> text=Audit")
    carol.click("text=Verify chain")
    assert "Chain intact" in carol.inner_text("#verify-result")
    _shot(carol, "audit-verified")


def test_revoke_a_card_with_a_reason(live_server, browser, acme):
    from cards.models import Card

    make_user("alice", [(acme, "admin")], password=PASSWORD)
    card = Card.objects.create(tenant=acme, uid="04C0FFEE000001", chip_type="desfire_ev2", state="active")
    page = _page(browser, live_server)
    _login(page, "alice")
    page.click("nav >> text=Cards")
    page.click("text=04C0FFEE000001")
    _shot(page, "card")
    page.select_option("#revoke-form select[name=reason]", "stolen")
    page.click("#revoke-form button[type=submit]")
    page.wait_for_selector("#card-state:has-text('revoked')")
    assert "stolen" in page.inner_text("#card-state")
    _shot(page, "card-revoked")
    card.refresh_from_db()
    assert (card.state, card.state_reason) == ("revoked", "stolen")
