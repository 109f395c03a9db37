"""Web UI fixtures: two tenants (acme, globex) with admins, an operator and an auditor; real OpenBao.

Every test here runs against the real OpenBao of tests.support.vault (`vault`): the audit chain
key and the tenant KEKs live there. Users are created without a password (fast) unless a test
signs in through the login form.
"""
from __future__ import annotations

import pytest
from django.test import Client

from cms.web.access import SESSION_REAUTH
from tests.support import people
from tests.support.people import make_tenant, make_user  # noqa: F401  (re-exported)

PASSWORD = "correct horse battery staple 7"

# The shared two-tenant fixtures (tests/support/people.py), made visible to this folder's tests.
acme = people.acme
globex = people.globex
admin = people.admin
second_admin = people.second_admin
operator = people.operator
auditor = people.auditor
other_admin = people.other_admin


def web_client(user=None, *, recent_auth: bool = True) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
        if recent_auth:
            session = client.session
            import time

            session[SESSION_REAUTH] = time.time()
            session.save()
    return client


@pytest.fixture
def acme_world(acme, admin):
    """One of everything in acme: profile, station, order, job, card with key slots and versions, campaign."""
    from django.utils import timezone

    from audit.models import Alert
    from cards.models import Card, CardProfile, Job, Order, Station
    from cards.models.stations import StationStatus
    from keys import services as key_services
    from keys.models import KeySlot
    from keys.models_campaigns import KekRotation, RotationCampaign

    profile = CardProfile.objects.create(tenant=acme, name="staff", chip_family="desfire", spec={"schema": 1})
    station = Station.objects.create(tenant=acme, code="acme-line-1", status=StationStatus.ENROLLED,
                                     hpke_public_key="aa" * 32, sign_public_key="bb" * 32)
    card = Card.objects.create(tenant=acme, uid="04A1B2C3D4E5F6", chip_type="desfire_ev2", state="active",
                               profile=profile)
    slot = KeySlot.objects.create(tenant=acme, card=card, role="cmk", key_no=0)
    key_services.key_version_create_random(slot=slot, state="active")
    order = Order.objects.create(tenant=acme, profile=profile, station=station, quantity=1,
                                 idempotency_key="acme-order-1", request_fingerprint="0" * 64)
    job = Job.objects.create(tenant=acme, order=order, card=card, station=station, state="failed",
                             error={"step": 3, "sw": "6982", "message": "security status not satisfied"},
                             trace=[{"step": 3, "c_apdu": "90AA0000", "sw": "6982"}])
    campaign = RotationCampaign.objects.create(tenant=acme, name="acme-secret-campaign", roles=["cmk"],
                                               target="random", created_by=admin)
    rotation = KekRotation.objects.create(tenant=acme, requested_by=admin)
    alert = Alert.objects.create(tenant_id=acme.pk, tenant_slug=acme.slug, rule="station_silent",
                                 subject="station:acme-line-1",
                                 message="station acme-line-1 silent for 600 s",
                                 first_seen_at=timezone.now(), last_seen_at=timezone.now())
    return {"profile": profile, "station": station, "card": card, "order": order, "job": job,
            "campaign": campaign, "kek_rotation": rotation, "slot": slot, "alert": alert}
