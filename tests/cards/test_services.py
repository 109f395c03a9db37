"""Card-side services: namespaces, AIDs in namespace, one tenant per key slot, stations, memberships."""
from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied, ValidationError

from audit.models import AuditEvent
from cards.models import Application, Card, Station
from cards.services import access, cards, stations, tenants
from cms.models import Membership, token_digest
from keys import keystore
from keys.models import KeySlot
from tests.cards.fixtures import ACME_GP_PREFIX


def new_tenant(actor, **overrides):
    values = {"slug": "initech", "name": "Initech", "gp_aid_prefix": "A00000061700D00D0001",
              "desfire_aid_first": 0xF0C000, "desfire_aid_last": 0xF0CFFF}
    values.update(overrides)
    return tenants.tenant_create(actor=actor, **values)


@pytest.fixture
def acme_card(acme):
    return Card.objects.create(tenant=acme, uid="04112233445566", chip_type="desfire_ev3")


@pytest.fixture
def globex_card(globex):
    return Card.objects.create(tenant=globex, uid="04AABBCCDDEEFF", chip_type="desfire_ev3")


class TestTenantNamespaces:
    def test_superuser_creates_tenant_with_its_vault_kek_and_an_audit_event(self, superuser, acme):
        tenant = new_tenant(superuser)
        assert keystore.kek_info(tenant.pk) is not None
        assert AuditEvent.objects.filter(action="tenant.created", tenant_slug="initech").exists()

    def test_tenant_admin_cannot_create_a_tenant(self, owner):
        with pytest.raises(PermissionDenied):
            new_tenant(owner)

    @pytest.mark.parametrize("prefix", [ACME_GP_PREFIX, ACME_GP_PREFIX[:-2], ACME_GP_PREFIX + "01"])
    def test_gp_prefix_that_is_a_prefix_of_another_or_below_it_is_refused(self, superuser, acme, prefix):
        with pytest.raises(ValidationError) as caught:
            new_tenant(superuser, gp_aid_prefix=prefix)
        assert "overlaps tenant acme" in caught.value.message_dict["gp_aid_prefix"][0]

    @pytest.mark.parametrize("first,last", [(0xF0AFFF, 0xF0B100), (0xF00000, 0xF0A000), (0xF0A100, 0xF0A200)])
    def test_intersecting_desfire_ranges_are_refused(self, superuser, acme, first, last):
        with pytest.raises(ValidationError) as caught:
            new_tenant(superuser, desfire_aid_first=first, desfire_aid_last=last)
        assert "intersects tenant acme" in caught.value.message_dict["desfire_aid_first"][0]

    def test_adjacent_desfire_range_is_accepted(self, superuser, acme):
        assert new_tenant(superuser, desfire_aid_first=0xF0B000, desfire_aid_last=0xF0B0FF).pk

    @pytest.mark.parametrize("prefix", ["A000000151", "A0000001515350AA"])
    def test_prefix_covering_a_jcop_system_aid_is_refused(self, superuser, prefix):
        with pytest.raises(ValidationError) as caught:
            new_tenant(superuser, gp_aid_prefix=prefix)
        assert "JCOP system AID" in caught.value.message_dict["gp_aid_prefix"][0]

    def test_range_cannot_shrink_away_from_existing_applications(self, superuser, acme, acme_card):
        Application.objects.create(card=acme_card, tenant=acme, kind="desfire", aid="F0AF00")
        with pytest.raises(ValidationError) as caught:
            tenants.tenant_update(actor=superuser, tenant=acme, desfire_aid_last=0xF0A0FF)
        assert "F0AF00" in caught.value.message_dict["desfire_aid_first"][0]


class TestApplicationsInNamespace:
    def test_desfire_application_outside_the_range_is_refused_naming_the_aid(self, owner, acme_card):
        with pytest.raises(ValidationError) as caught:
            cards.application_create(actor=owner, card=acme_card, kind="desfire", aid="F0B001")
        assert caught.value.message_dict == {"aid": ["outside the tenant's DESFire AID range F0A000-F0AFFF"]}

    def test_desfire_application_inside_the_range_is_recorded_and_audited(self, owner, acme_card):
        app = cards.application_create(actor=owner, card=acme_card, kind="desfire", aid="f0a001", num_keys=3)
        assert app.aid == "F0A001" and app.tenant_id == acme_card.tenant_id
        assert AuditEvent.objects.filter(action="application.created", aid="F0A001").exists()

    def test_gp_application_on_a_jcop_card_must_be_under_the_prefix(self, owner, acme):
        card = Card.objects.create(tenant=acme, uid="04010203040506", chip_type="jcop4")
        with pytest.raises(ValidationError):
            cards.application_create(actor=owner, card=card, kind="gp", aid="A000000151000000")
        assert cards.application_create(actor=owner, card=card, kind="gp", aid=ACME_GP_PREFIX + "01").pk

    def test_member_of_another_tenant_cannot_add_an_application(self, member_of_other, acme_card):
        with pytest.raises(PermissionDenied):
            cards.application_create(actor=member_of_other, card=acme_card, kind="desfire", aid="F0A001")


class TestKeySlotServesOneTenant:
    def test_slot_takes_the_tenant_of_its_card_and_application(self, owner, acme_card):
        app = cards.application_create(actor=owner, card=acme_card, kind="desfire", aid="F0A001", num_keys=2)
        slot = cards.key_slot_create(actor=owner, card=acme_card, application=app, role="app_key", key_no=1)
        assert slot.tenant_id == acme_card.tenant_id == app.tenant_id

    def test_application_of_another_tenant_is_refused(self, owner, acme_card, globex):
        # Built by hand past the services: the slot service must still refuse to bridge tenants.
        foreign = Application.objects.create(card=acme_card, tenant=globex, kind="desfire", aid="F0B001")
        with pytest.raises(ValidationError) as caught:
            cards.key_slot_create(actor=owner, card=acme_card, application=foreign, role="amk", key_no=0)
        assert "application" in caught.value.message_dict
        assert not KeySlot.objects.exists()

    def test_application_on_another_card_is_refused(self, owner, acme, acme_card):
        other_card = Card.objects.create(tenant=acme, uid="04998877665544", chip_type="desfire_ev3")
        app = cards.application_create(actor=owner, card=other_card, kind="desfire", aid="F0A001")
        with pytest.raises(ValidationError):
            cards.key_slot_create(actor=owner, card=acme_card, application=app, role="amk", key_no=0)

    def test_master_key_of_another_tenant_is_refused(self, owner, acme_card, masters):
        with pytest.raises(ValidationError) as caught:
            cards.key_slot_create(actor=owner, card=acme_card, role="cmk", key_no=0, policy="diversified",
                                  master=masters["globex-master"])
        assert caught.value.message_dict == {"master": ["belongs to another tenant than the card"]}

    def test_every_slot_in_the_database_serves_one_tenant(self, owner, acme_card, masters):
        app = cards.application_create(actor=owner, card=acme_card, kind="desfire", aid="F0A002", num_keys=2)
        cards.key_slot_create(actor=owner, card=acme_card, role="cmk", key_no=0, policy="diversified",
                              master=masters["cmk-master"])
        cards.key_slot_create(actor=owner, card=acme_card, application=app, role="amk", key_no=0)
        for slot in KeySlot.objects.select_related("card", "application", "master"):
            assert slot.tenant_id == slot.card.tenant_id
            assert slot.application is None or slot.application.tenant_id == slot.tenant_id
            assert slot.master is None or slot.master.tenant_id == slot.tenant_id


class TestStations:
    def test_create_returns_a_token_whose_digest_only_is_stored(self, owner, acme):
        station, token = stations.station_create(actor=owner, tenant=acme, code="line-4-a")
        stored = Station.objects.get(pk=station.pk)
        assert token not in stored.enrolment_token_digest
        assert stored.enrolment_token_digest == token_digest(token)
        assert stations.station_match_enrolment_token(code="line-4-a", token=token) == stored
        assert stations.station_match_enrolment_token(code="line-4-a", token=token + "x") is None
        assert AuditEvent.objects.filter(action="station.created").exists()

    def test_only_an_enrolled_station_with_keys_is_approved(self, owner, acme):
        station, _ = stations.station_create(actor=owner, tenant=acme, code="line-4-a")
        with pytest.raises(ValidationError):
            stations.station_approve(actor=owner, station=station)
        Station.objects.filter(pk=station.pk).update(status="enrolled", hpke_public_key="11" * 32,
                                                     sign_public_key="22" * 32)
        approved = stations.station_approve(actor=owner, station=station)
        assert approved.status == "approved" and approved.approved_by == "alice"
        assert AuditEvent.objects.filter(action="station.approved").exists()

    def test_revoked_station_can_no_longer_enrol(self, owner, acme):
        station, token = stations.station_create(actor=owner, tenant=acme, code="line-4-a")
        stations.station_revoke(actor=owner, station=station, reason="stolen")
        assert stations.station_match_enrolment_token(code="line-4-a", token=token) is None
        event = AuditEvent.objects.get(action="station.revoked")
        assert event.details["reason"] == "stolen"

    def test_operator_cannot_approve(self, operator, owner, acme):
        station, _ = stations.station_create(actor=owner, tenant=acme, code="line-4-a")
        with pytest.raises(PermissionDenied):
            stations.station_approve(actor=operator, station=station)


class TestMemberships:
    def test_the_last_admin_cannot_be_removed_or_demoted(self, owner, acme):
        membership = Membership.objects.get(user=owner)
        with pytest.raises(ValidationError):
            access.membership_remove(actor=owner, membership=membership)
        with pytest.raises(ValidationError):
            access.membership_change(actor=owner, membership=membership, role="auditor")

    def test_grant_change_remove_are_audited(self, owner, acme, outsider):
        membership = access.membership_grant(actor=owner, tenant=acme, user=outsider, role="operator")
        access.membership_change(actor=owner, membership=membership, role="auditor")
        access.membership_remove(actor=owner, membership=membership)
        events = AuditEvent.objects.filter(action__startswith="membership.").order_by("sequence")
        actions = list(events.values_list("action", flat=True))
        assert actions == ["membership.granted", "membership.changed", "membership.removed"]


class TestRollbackWithAudit:
    def test_a_failed_audit_write_rolls_the_change_back(self, owner, acme, monkeypatch):
        from audit.errors import AuditUnavailable

        def broken(**kwargs):
            raise AuditUnavailable("vault down")

        monkeypatch.setattr("cards.services.audit_log.record_event", broken)
        with pytest.raises(AuditUnavailable):
            stations.station_create(actor=owner, tenant=acme, code="line-4-a")
        assert not Station.objects.exists()
