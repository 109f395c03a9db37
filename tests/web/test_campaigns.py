"""Rotation campaigns through the real OpenBao: two-person approval, batches, rotation, rollback, grace."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.utils import timezone

from audit.models import AuditEvent
from keys import campaigns, keystore, services
from keys.models import KeySlot, KeyVersion
from keys.models_campaigns import CampaignState, ItemState
from tests.web.conftest import make_tenant, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def eager_celery():
    from cms.celery import app

    before = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = before


@pytest.fixture
def transit_calls(monkeypatch):
    """Every Vault request the code makes (method, path); they still go to OpenBao."""
    from cms import vault as cms_vault

    calls: list[tuple[str, str]] = []
    real = cms_vault.call

    def recording(method, path, body=None, *, what):
        calls.append((method, path))
        return real(method, path, body, what=what)

    monkeypatch.setattr(cms_vault, "call", recording)
    return calls


def _cards_with_cmk(tenant, count: int, *, first_uid: int = 0x04000000000001):
    """`count` active DESFire cards of `tenant`, each with a CMK slot holding an active random version."""
    from cards.models import Card
    from keys import services

    slots = []
    for n in range(count):
        card = Card.objects.create(tenant=tenant, uid=f"{first_uid + n:014X}", chip_type="desfire_ev2",
                                   state="active")
        slot = KeySlot.objects.create(tenant=tenant, card=card, role="cmk", key_no=0)
        services.key_version_create_random(slot=slot, state="active")
        slots.append(slot)
    return slots


def _approved(acme, admin, second_admin, **kwargs):
    campaign = campaigns.campaign_create(actor=admin, tenant=acme, name="cmk-2026", roles=["cmk"],
                                         target="random", **{"batch_size": 2, "grace_days": 7, **kwargs})
    return campaigns.campaign_approve(actor=second_admin, campaign=campaign)


def test_creator_cannot_approve_and_the_refusal_is_audited(acme, admin, second_admin):
    campaign = campaigns.campaign_create(actor=admin, tenant=acme, name="cmk", roles=["cmk"], target="random")
    with pytest.raises(PermissionDenied, match="creator"):
        campaigns.campaign_approve(actor=admin, campaign=campaign)
    campaign.refresh_from_db()
    assert campaign.state == CampaignState.AWAITING_APPROVAL
    refused = AuditEvent.objects.get(action="keys.campaign_approval_refused")
    assert (refused.actor_name, refused.result) == ("alice", "refused")

    campaigns.campaign_approve(actor=second_admin, campaign=campaign)
    campaign.refresh_from_db()
    assert (campaign.state, campaign.approved_by) == (CampaignState.APPROVED, second_admin)
    created = AuditEvent.objects.get(action="keys.campaign_created")
    approved = AuditEvent.objects.get(action="keys.campaign_approved")
    assert (created.actor_name, approved.actor_name) == ("alice", "carol")


def test_an_admin_of_another_tenant_cannot_approve(acme, admin, other_admin):
    campaign = campaigns.campaign_create(actor=admin, tenant=acme, name="cmk", roles=["cmk"], target="random")
    with pytest.raises(PermissionDenied):
        campaigns.campaign_approve(actor=other_admin, campaign=campaign)
    campaign.refresh_from_db()
    assert campaign.state == CampaignState.AWAITING_APPROVAL


def test_an_operator_cannot_create_a_campaign(acme, operator):
    with pytest.raises(PermissionDenied):
        campaigns.campaign_create(actor=operator, tenant=acme, name="x", roles=["cmk"], target="random")


def test_bad_input_names_each_field(acme, admin):
    with pytest.raises(ValidationError) as caught:
        campaigns.campaign_create(actor=admin, tenant=acme, name=" ", roles=["nope"], target="master_version",
                                  batch_size=0, grace_days=-1)
    assert set(caught.value.message_dict) == {"name", "roles", "master_version", "batch_size", "grace_days"}


def test_nothing_happens_before_approval(acme, admin):
    _cards_with_cmk(acme, 1)
    campaign = campaigns.campaign_create(actor=admin, tenant=acme, name="cmk", roles=["cmk"], target="random")
    with pytest.raises(campaigns.CampaignError, match="approved"):
        campaigns.campaign_start(actor=admin, campaign=campaign)
    assert KeyVersion.objects.filter(state="pending").count() == 0


def test_each_batch_creates_pending_versions_in_one_transit_call(acme, admin, second_admin, transit_calls):
    slots = _cards_with_cmk(acme, 5)
    campaign = _approved(acme, admin, second_admin)
    campaigns.campaign_start(actor=admin, campaign=campaign)
    assert campaigns.campaign_progress(campaign)[ItemState.WAITING] == 5

    transit_calls.clear()
    assert campaigns.campaign_run_batch(campaign_id=campaign.pk) == 2
    encrypts = [c for c in transit_calls if "/encrypt/" in c[1]]
    assert len(encrypts) == 1, transit_calls
    pending = KeyVersion.objects.filter(state="pending")
    assert pending.count() == 2 and all(v.vault_ref and v.kcv for v in pending)
    for version in pending:
        assert keystore.exists(keystore.BlobRef.parse(version.vault_ref))

    assert campaigns.campaign_run_batch(campaign_id=campaign.pk) == 2
    assert campaigns.campaign_run_batch(campaign_id=campaign.pk) == 1
    assert campaigns.campaign_run_batch(campaign_id=campaign.pk) == 0
    progress = campaigns.campaign_progress(campaign)
    assert (progress["total"], progress["version_created"], progress["rotated"]) == (5, 5, 0)
    assert {i.batch_no for i in campaign.items.all()} == {1, 2, 3}
    assert len(slots) == 5


def test_started_campaign_runs_its_batches_through_celery(acme, admin, second_admin, eager_celery,
                                                          django_capture_on_commit_callbacks):
    _cards_with_cmk(acme, 3)
    campaign = _approved(acme, admin, second_admin)
    with django_capture_on_commit_callbacks(execute=True):
        campaigns.campaign_start(actor=admin, campaign=campaign)
    assert campaigns.campaign_progress(campaign)["version_created"] == 3


def test_a_presented_card_owes_its_change_and_rotating_it_retires_the_old_version(acme, admin, second_admin):
    slot = _cards_with_cmk(acme, 1)[0]
    old = slot.versions.get(state="active")
    campaign = _approved(acme, admin, second_admin)
    campaigns.campaign_start(actor=admin, campaign=campaign)
    campaigns.campaign_run_batch(campaign_id=campaign.pk)

    owed = campaigns.versions_owed(slot.card)
    assert len(owed) == 1 and owed[0].current == old and owed[0].target.state == "pending"
    new = owed[0].target

    campaigns.campaign_pause(actor=admin, campaign=campaign)
    assert campaigns.versions_owed(slot.card) == []  # a paused campaign hands out nothing
    campaigns.campaign_resume(actor=admin, campaign=campaign)

    campaigns.campaign_card_rotated(version=new)
    old.refresh_from_db()
    new.refresh_from_db()
    campaign.refresh_from_db()
    assert (new.state, old.state) == ("active", "retired")
    assert old.grace_until - old.retired_at == timedelta(days=7)
    assert campaign.state == CampaignState.COMPLETED
    assert campaigns.campaign_progress(campaign)["rotated"] == 1
    assert campaigns.versions_owed(slot.card) == []


def test_rollback_destroys_pending_versions_and_schedules_rekey_back(acme, admin, second_admin,
                                                                     transit_calls):
    rotated_slot, pending_slot = _cards_with_cmk(acme, 2)
    campaign = _approved(acme, admin, second_admin)
    campaigns.campaign_start(actor=admin, campaign=campaign)
    campaigns.campaign_run_batch(campaign_id=campaign.pk)
    first_old = rotated_slot.versions.get(state="active")
    first_new = campaigns.versions_owed(rotated_slot.card)[0].target
    pending_new = campaigns.versions_owed(pending_slot.card)[0].target
    campaigns.campaign_card_rotated(version=first_new)

    transit_calls.clear()
    campaigns.campaign_rollback(actor=admin, campaign=campaign)
    pending_new.refresh_from_db()
    assert pending_new.state == "destroyed"
    assert not keystore.exists(keystore.BlobRef.parse(pending_new.vault_ref))
    assert pending_slot.versions.get(state="active")  # never touched: still its old key
    assert campaigns.versions_owed(pending_slot.card) == []
    # the re-key back: a new pending version holding the old key, unwrapped and rewrapped in Vault
    assert [p for _, p in transit_calls if "/decrypt/" in p or "/encrypt/" in p] != []
    back = campaigns.versions_owed(rotated_slot.card)
    assert len(back) == 1 and back[0].current == first_new
    restore = back[0].target
    first_old.refresh_from_db()
    assert (restore.state, restore.kcv, restore.number) == ("pending", first_old.kcv, first_new.number + 1)
    with services.card_keys_unwrap(versions=[restore, first_old], purpose="test") as keys:
        assert keys[restore.pk] == keys[first_old.pk]

    campaigns.campaign_card_rotated(version=restore)
    restore.refresh_from_db()
    first_new.refresh_from_db()
    assert (restore.state, first_new.state) == ("active", "retired")
    progress = campaigns.campaign_progress(campaign)
    assert (progress["restored"], progress["cancelled"]) == (1, 1)
    assert AuditEvent.objects.filter(action="keys.campaign_rolled_back").exists()
    assert AuditEvent.objects.filter(action="keys.key_restored", key_version=restore.number).exists()


def test_a_job_activating_the_version_moves_the_campaign_on(acme, admin, second_admin):
    """The pipeline's path: the job result activates the pending version; the campaign notices."""
    from keys.sealing import version_activate

    slot = _cards_with_cmk(acme, 1)[0]
    campaign = _approved(acme, admin, second_admin)
    campaigns.campaign_start(actor=admin, campaign=campaign)
    campaigns.campaign_run_batch(campaign_id=campaign.pk)
    old = slot.versions.get(state="active")
    version_activate(campaigns.versions_owed(slot.card)[0].target, grace_days=30)
    assert campaigns.campaign_sync(campaign) == 1
    old.refresh_from_db()
    campaign.refresh_from_db()
    assert old.grace_until - old.retired_at == timedelta(days=7)  # the campaign's grace, not the default
    assert campaign.state == CampaignState.COMPLETED
    assert campaigns.campaign_progress(campaign)["rotated"] == 1


def test_a_paused_campaign_withholds_its_pending_versions(acme, admin, second_admin):
    slot = _cards_with_cmk(acme, 1)[0]
    campaign = _approved(acme, admin, second_admin)
    campaigns.campaign_start(actor=admin, campaign=campaign)
    campaigns.campaign_run_batch(campaign_id=campaign.pk)
    pending = slot.versions.get(state="pending")
    assert campaigns.withheld_version_ids(slot.card) == set()
    campaigns.campaign_pause(actor=admin, campaign=campaign)
    assert campaigns.withheld_version_ids(slot.card) == {pending.pk}


def test_grace_sweep_destroys_retired_versions_in_vault_and_lists_overdue_cards(acme, admin, second_admin):
    rotated_slot, late_slot = _cards_with_cmk(acme, 2)
    campaign = _approved(acme, admin, second_admin)
    campaigns.campaign_start(actor=admin, campaign=campaign)
    campaigns.campaign_run_batch(campaign_id=campaign.pk)
    old = rotated_slot.versions.get(state="active")
    campaigns.campaign_card_rotated(version=campaigns.versions_owed(rotated_slot.card)[0].target)

    assert campaigns.grace_sweep()["destroyed"] == 0  # still in its grace period
    campaign.refresh_from_db()
    assert not campaigns.campaign_overdue_items(campaign).exists()
    later = timezone.now() + timedelta(days=8)
    assert list(campaigns.campaign_overdue_items(campaign, now=later).values_list("card_id", flat=True)) \
        == [late_slot.card_id]
    # the grace period ends (time passes): the retired version's deadline is now behind us
    KeyVersion.objects.filter(pk=old.pk).update(grace_until=timezone.now() - timedelta(seconds=1))
    assert campaigns.grace_sweep() == {"destroyed": 1, "failed": 0}
    old.refresh_from_db()
    assert old.state == "destroyed"
    assert not keystore.exists(keystore.BlobRef.parse(old.vault_ref))
    assert AuditEvent.objects.filter(action="keys.key_destroyed", key_version=old.number).exists()


def test_diversified_campaign_derives_every_kcv_from_one_master_unwrap(acme, admin, second_admin,
                                                                       transit_calls):
    from cards.models import Card
    from keys import services
    from keys.models import MasterKey

    master = MasterKey.objects.create(tenant=acme, name="cmk-master", method="an10922")
    v1 = services.master_key_version_create(master=master, state="active")
    v2 = services.master_key_version_create(master=master)
    for n in range(3):
        card = Card.objects.create(tenant=acme, uid=f"0400000000001{n}", chip_type="desfire_ev2",
                                   state="active")
        slot = KeySlot.objects.create(tenant=acme, card=card, role="cmk", key_no=0, policy="diversified",
                                      master=master)
        services.key_version_create_diversified(slot=slot, master_version=v1, state="active")
    campaign = campaigns.campaign_create(actor=admin, tenant=acme, name="cmk-v2", roles=["cmk"],
                                         target="master_version", master_version=v2, batch_size=10)
    campaigns.campaign_approve(actor=second_admin, campaign=campaign)
    campaigns.campaign_start(actor=admin, campaign=campaign)
    transit_calls.clear()
    campaigns.campaign_run_batch(campaign_id=campaign.pk)
    assert len([c for c in transit_calls if "/decrypt/" in c[1]]) == 1
    created = KeyVersion.objects.filter(state="pending", master_version=v2)
    assert created.count() == 3
    # the KCV computed in the batch equals the one the single-card path computes
    one = created.first()
    with services.card_keys_unwrap(versions=[one], purpose="test") as keys:
        from keys.kcv import kcv, scheme_for_role

        assert kcv(keys[one.pk], scheme_for_role("cmk")) == one.kcv


def test_kek_rotation_needs_a_second_admin_and_then_rewraps(acme, admin, second_admin, eager_celery,
                                                           django_capture_on_commit_callbacks):
    _cards_with_cmk(acme, 2)
    rotation = campaigns.kek_rotation_request(actor=admin, tenant=acme, reason="yearly")
    with pytest.raises(PermissionDenied, match="cannot approve"):
        campaigns.kek_rotation_approve(actor=admin, rotation=rotation)
    with django_capture_on_commit_callbacks(execute=True):
        campaigns.kek_rotation_approve(actor=second_admin, rotation=rotation)
    rotation.refresh_from_db()
    assert rotation.state == "done" and rotation.kek_version == 2 and rotation.blobs_rewrapped == 2
    assert keystore.kek_info(acme.pk)["min_decryption_version"] == 2


def test_a_user_who_is_admin_elsewhere_but_not_here_cannot_approve(acme, admin):
    globex = make_tenant("initech", "A00000061700D00D0001", 0xF0C000)
    both = make_user("dave", [(globex, "admin"), (acme, "auditor")])
    campaign = campaigns.campaign_create(actor=admin, tenant=acme, name="cmk", roles=["cmk"], target="random")
    with pytest.raises(PermissionDenied):
        campaigns.campaign_approve(actor=both, campaign=campaign)
