"""Card lifecycle through the pipeline (real OpenBao, station double): a revoked or suspended card is refused
at the station with nothing sent to it, a revoked card's keys are destroyed in Vault once the grace period
has passed, and a replacement card gets the old card's profile the first time it is presented."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from audit.models import AuditEvent
from cards.models import Card, Job
from cards.services import lifecycle
from keys import campaigns, keystore
from keys.models import KeyVersion

from .conftest import DESFIRE_UID

pytestmark = [pytest.mark.vault, pytest.mark.django_db]
NEW_UID = "04A1B2C3D4E5F7"


@pytest.fixture
def alice(acme):
    from django.contrib.auth import get_user_model

    from cms.models import Membership

    user = get_user_model().objects.create_user(username="alice", password=None)
    Membership.objects.create(user=user, tenant=acme, role="admin")
    return user


@pytest.fixture
def provisioned(cms, station, desfire_profile, order_for):
    order_for(desfire_profile)
    cms.report(station.report("card_presented", uid=DESFIRE_UID))
    assert cms.result(station.result(cms.last_envelope()))["state"] == "succeeded"
    card = Card.objects.get(uid=DESFIRE_UID)
    assert card.state == "active"
    return card


def _refusals(uid: str) -> list[dict]:
    return list(AuditEvent.objects.filter(action="card.presentation_refused", card_uid=uid)
                .order_by("sequence").values_list("details", flat=True))


def test_suspended_card_is_refused_until_resumed(cms, station, provisioned, alice, sent):
    lifecycle.card_suspend(actor=alice, card=provisioned, reason="left at reception")
    answer = cms.report(station.report("card_presented", uid=DESFIRE_UID))
    assert answer == {"status": "refused", "reason": "card_state"}
    assert len(sent) == 1 and Job.objects.filter(card=provisioned).count() == 1
    lifecycle.card_resume(actor=alice, card=provisioned)
    # resumed and owing nothing: accepted, nothing to send
    assert cms.report(station.report("card_presented", uid=DESFIRE_UID))["status"] == "nothing_to_do"


def test_revoked_card_is_refused_at_the_station_and_its_keys_destroyed_after_the_grace_period(
        cms, station, provisioned, alice, sent, settings):
    lifecycle.card_revoke(actor=alice, card=provisioned, reason="stolen")
    answer = cms.report(station.report("card_presented", uid=DESFIRE_UID))
    assert answer == {"status": "refused", "reason": "card_state"}
    assert len(sent) == 1  # only the provisioning job: nothing reached the card
    assert Job.objects.filter(card=provisioned).count() == 1
    refusals = _refusals(DESFIRE_UID)
    assert len(refusals) == 1 and "revoked" in str(refusals[0])

    versions = list(KeyVersion.objects.filter(slot__card=provisioned))
    assert versions and {v.state for v in versions} == {"retired"}
    assert all(v.grace_until > timezone.now() + timedelta(days=settings.KEY_GRACE_PERIOD_DAYS - 1)
               for v in versions)
    assert campaigns.grace_sweep()["destroyed"] == 0  # within the grace period nothing is destroyed
    blobs = [keystore.BlobRef.parse(v.vault_ref) for v in versions if v.vault_ref]
    assert blobs and all(keystore.exists(ref) for ref in blobs)

    # the grace period ends
    ledger = KeyVersion.objects.filter(slot__card=provisioned)
    ledger.update(grace_until=timezone.now() - timedelta(seconds=1))
    assert campaigns.grace_sweep() == {"destroyed": len(versions), "failed": 0}
    assert set(ledger.values_list("state", flat=True)) == {"destroyed"}
    assert not any(keystore.exists(ref) for ref in blobs)
    destroyed = AuditEvent.objects.filter(action="keys.key_destroyed", card_uid=DESFIRE_UID)
    assert destroyed.count() == len(versions)
    # still refused afterwards
    assert cms.report(station.report("card_presented", uid=DESFIRE_UID))["status"] == "refused"


def test_replacement_card_inherits_the_profile_and_the_old_one_is_revoked(cms, station, provisioned, alice,
                                                                           desfire_profile):
    order = lifecycle.card_replace(actor=alice, card=provisioned, new_uid=NEW_UID.lower(), reason="damaged")
    provisioned.refresh_from_db()
    assert (provisioned.state, provisioned.state_reason) == ("revoked", "damaged")
    assert order.uids == [NEW_UID] and order.profile_id == desfire_profile.pk
    revoked = AuditEvent.objects.get(action="card.revoked", card_uid=DESFIRE_UID)
    replaced = AuditEvent.objects.get(action="card.replaced", card_uid=NEW_UID)
    assert revoked.details["reason"] == "damaged" and replaced.details["replaces"] == DESFIRE_UID

    # the new card at a station of the tenant: provisioned with the old card's profile
    answer = cms.report(station.report("card_presented", uid=NEW_UID))
    assert answer["status"] == "dispatched"
    assert cms.result(station.result(cms.last_envelope()))["state"] == "succeeded"
    new = Card.objects.get(uid=NEW_UID)
    assert (new.state, new.profile_id) == ("active", desfire_profile.pk)
    assert cms.report(station.report("card_presented", uid=DESFIRE_UID))["status"] == "refused"


def test_replace_refuses_a_bad_or_known_uid_and_changes_nothing(provisioned, alice):
    from django.core.exceptions import ValidationError

    for bad, why in (("04ZZ", "hex"), (DESFIRE_UID, "already known")):
        with pytest.raises(ValidationError) as caught:
            lifecycle.card_replace(actor=alice, card=provisioned, new_uid=bad, reason="lost")
        assert "new_uid" in caught.value.message_dict, why
    with pytest.raises(ValidationError) as caught:
        lifecycle.card_replace(actor=alice, card=provisioned, new_uid=NEW_UID, reason="misplaced")
    assert "reason" in caught.value.message_dict
    provisioned.refresh_from_db()
    assert provisioned.state == "active"
    assert not Card.objects.filter(uid=NEW_UID).exists()
    assert not AuditEvent.objects.filter(action__in=("card.revoked", "card.replaced")).exists()
