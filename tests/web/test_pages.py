"""What the pages show and do for the tenant's own people: lifecycle actions, campaigns, audit, stations."""
from __future__ import annotations

import csv
import io
import json

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from audit.models import AuditEvent
from cards.services import lifecycle
from tests.web.conftest import web_client

pytestmark = pytest.mark.django_db


def test_suspend_resume_revoke_are_audited_and_revoke_retires_the_keys(acme_world, admin, settings):
    card, slot = acme_world["card"], acme_world["slot"]
    lifecycle.card_suspend(actor=admin, card=card, reason="left on a desk")
    with pytest.raises(ValidationError, match="only an active card"):
        lifecycle.card_suspend(actor=admin, card=card)
    lifecycle.card_resume(actor=admin, card=card)
    with pytest.raises(ValidationError) as caught:
        lifecycle.card_revoke(actor=admin, card=card, reason="misplaced")
    assert "reason" in caught.value.message_dict
    lifecycle.card_revoke(actor=admin, card=card, reason="compromised")
    card.refresh_from_db()
    assert (card.state, card.state_reason) == ("revoked", "compromised")
    version = slot.versions.get()
    assert version.state == "retired" and version.grace_until is not None
    actions = list(AuditEvent.objects.filter(card_uid=card.uid, action__startswith="card.")
                   .order_by("sequence").values_list("action", flat=True))
    assert actions == ["card.suspended", "card.resumed", "card.revoked"]


def test_card_page_shows_key_versions_history_and_lifecycle_buttons(acme_world, admin):
    card = acme_world["card"]
    body = web_client(admin).get(reverse("web:card", kwargs={"pk": card.pk})).content.decode()
    assert "v1 active" in body and "keys.key_generated" in body and 'id="revoke-form"' in body
    response = web_client(admin).post(reverse("web:card_suspend", kwargs={"pk": card.pk}), {"reason": "x"})
    assert response.status_code == 302
    card.refresh_from_db()
    assert card.state == "suspended"


def test_job_page_names_the_status_word_meaning(acme_world, operator):
    body = web_client(operator).get(reverse("web:job", kwargs={"pk": acme_world["job"].pk})).content.decode()
    assert "6982" in body and "Security status not satisfied" in body


def test_campaign_pages_create_refuse_the_creator_then_approve_and_start(acme_world, admin, second_admin):
    client = web_client(admin)
    response = client.post(reverse("web:campaigns"), {
        "name": "cmk-web", "roles": ["cmk"], "target": "random", "batch_size": 10, "grace_days": 3})
    assert response.status_code == 302
    detail = response["Location"]
    pk = int(detail.strip("/").split("/")[-1])
    refused = client.post(reverse("web:campaign_approve", kwargs={"pk": pk}), follow=True).content.decode()
    assert "creator of a campaign cannot approve it" in refused
    assert "Awaiting a second admin" in refused
    other = web_client(second_admin)
    assert other.post(reverse("web:campaign_approve", kwargs={"pk": pk})).status_code == 302
    page = other.post(reverse("web:campaign_start", kwargs={"pk": pk}), follow=True).content.decode()
    assert "Running" in page or "running" in page
    assert 'id="progress"' in page and "total 1" in page


def test_campaign_form_reports_bad_input_by_field(acme_world, admin):
    body = web_client(admin).post(reverse("web:campaigns"), {
        "name": "x", "target": "master_version", "batch_size": 0, "grace_days": 3}).content.decode()
    assert "This field is required" in body  # roles
    assert "Ensure this value is greater than or equal to 1" in body  # batch size


def test_audit_filters_export_and_verify(acme_world, auditor):
    client = web_client(auditor)
    uid = acme_world["card"].uid
    body = client.get(reverse("web:audit"), {"card_uid": uid}).content.decode()
    assert "keys.key_generated" in body
    assert client.get(reverse("web:audit"), {"card_uid": "zz"}).status_code == 200  # errors shown, no crash
    exported = b"".join(client.get(reverse("web:audit_export", kwargs={"fmt": "csv"}),
                                   {"card_uid": uid}).streaming_content).decode()
    rows = list(csv.DictReader(io.StringIO(exported)))
    assert rows and {r["card_uid"] for r in rows} == {uid}
    as_json = json.loads(client.get(reverse("web:audit_export", kwargs={"fmt": "json"})).content)
    assert {e["tenant_slug"] for e in as_json} == {"acme"}
    verdict = client.post(reverse("web:audit_verify")).content.decode()
    assert "Chain intact" in verdict


def test_stations_approve_and_revoke(acme_world, admin):
    station = acme_world["station"]
    client = web_client(admin)
    client.post(reverse("web:station_approve", kwargs={"pk": station.pk}))
    station.refresh_from_db()
    assert station.status == "approved"
    client.post(reverse("web:station_revoke", kwargs={"pk": station.pk}), {"reason": "stolen laptop"})
    station.refresh_from_db()
    assert station.status == "revoked"
    assert AuditEvent.objects.get(action="station.revoked").details["reason"] == "stolen laptop"


def test_dashboard_counts_cards_and_key_versions(acme_world, operator):
    from django.utils import timezone

    from cards.models import Job

    world = acme_world
    Job.objects.create(tenant=world["card"].tenant, card=world["card"], station=world["station"],
                       state="succeeded", finished_at=timezone.now())
    body = web_client(operator).get("/").content.decode()
    assert f"{timezone.now():%Y-%m-%d}: 1" in body  # today's bar of the provisioning rate
    assert 'id="stations-online">0 / 1' in body
    assert "cmk" in body and "v1" in body


@pytest.fixture
def eager_celery():
    from cms.celery import app

    before = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = before


def test_kek_rotation_page_needs_a_second_admin(acme_world, admin, second_admin, eager_celery,
                                                django_capture_on_commit_callbacks):
    from keys import keystore
    from keys.models_campaigns import KekRotation

    KekRotation.objects.all().delete()
    alice = web_client(admin)
    alice.post(reverse("web:kek"), {"reason": "yearly"})
    rotation = KekRotation.objects.get()
    refused = alice.post(reverse("web:kek_approve", kwargs={"pk": rotation.pk}), follow=True).content.decode()
    assert "cannot approve it" in refused
    with django_capture_on_commit_callbacks(execute=True):
        web_client(second_admin).post(reverse("web:kek_approve", kwargs={"pk": rotation.pk}))
    rotation.refresh_from_db()
    assert (rotation.state, rotation.kek_version, rotation.blobs_rewrapped) == ("done", 2, 1)
    assert keystore.kek_info(acme_world["card"].tenant_id)["min_decryption_version"] == 2
    assert "KEK v2, 1 keys rewrapped" in alice.get(reverse("web:kek")).content.decode()


def test_campaign_pause_resume_and_rollback_from_the_page(acme_world, admin, second_admin):
    from keys import campaigns

    campaign = acme_world["campaign"]
    campaigns.campaign_approve(actor=second_admin, campaign=campaign)
    campaigns.campaign_start(actor=admin, campaign=campaign)
    campaigns.campaign_run_batch(campaign_id=campaign.pk)
    client = web_client(admin)
    for action, state in (("pause", "paused"), ("resume", "running"), ("rollback", "rolled_back")):
        client.post(reverse(f"web:campaign_{action}", kwargs={"pk": campaign.pk}))
        campaign.refresh_from_db()
        assert campaign.state == state, action
    page = client.get(reverse("web:campaign", kwargs={"pk": campaign.pk})).content.decode()
    assert "cancelled 1" in page
    wrong = client.post(reverse("web:campaign_pause", kwargs={"pk": campaign.pk}), follow=True)
    assert "only a running campaign can be paused" in wrong.content.decode()


def test_profile_dry_run_plan_names_keys_by_reference_only(acme_world, operator, acme):
    from cards.models import CardProfile
    from keys import services
    from keys.models import MasterKey
    from tests.cards.fixtures import desfire_spec

    for name in ("cmk-master", "amk-master"):
        master = MasterKey.objects.create(tenant=acme, name=name, method="an10922")
        services.master_key_version_create(master=master, state="active")
    spec = desfire_spec()
    spec["applications"][0]["aid"] = "F0A001"
    profile = CardProfile.objects.create(tenant=acme, name="badge", chip_family="desfire", spec=spec)
    client = web_client(operator)
    url = reverse("web:profile_plan", kwargs={"pk": profile.pk})
    body = client.get(url, {"uid": "04112233445566", "chip_type": "desfire_ev2"}).content.decode()
    assert 'id="plan-summary"' in body and "desfire.change_key" in body
    assert "steps" in body and "plan-problem" not in body
    wrong = client.get(url, {"chip_type": "jcop4"}).content.decode()
    assert "plan-problem" in wrong and "for desfire cards" in wrong
    assert "give a card UID, a chip type, or both" in client.get(url, {"uid": ""}).content.decode()


def test_csv_export_quotes_cells_a_spreadsheet_would_run(acme_world, admin, auditor):
    from cards.services import stations

    stations.station_revoke(actor=admin, station=acme_world["station"], reason="=HYPERLINK(\"http://x\")")
    exported = b"".join(web_client(auditor).get(reverse("web:audit_export", kwargs={"fmt": "csv"}),
                                                {"action": "station.revoked"}).streaming_content).decode()
    row = next(csv.DictReader(io.StringIO(exported)))
    assert row["action"] == "station.revoked"
    assert json.loads(row["details"])["reason"].startswith("=")  # the JSON cell itself starts with {
    assert "\n=" not in exported and ",=" not in exported


def test_with_vault_sealed_an_action_changes_nothing_and_says_why(acme_world, admin, vault):
    from audit.chainkey import forget_chain_key

    card = acme_world["card"]
    client = web_client(admin)  # signing in is audited too: before the seal
    vault.seal()
    forget_chain_key()  # the chain key is cached per process; a sealed Vault must be asked again
    page = client.post(reverse("web:card_revoke", kwargs={"pk": card.pk}), {"reason": "lost"},
                                  follow=True).content.decode()
    assert "Nothing was changed" in page
    card.refresh_from_db()
    assert card.state == "active"
