"""Registers the card-side viewsets on the /api/v1/ router."""
from __future__ import annotations

from cards.api.access import ApiTokenViewSet, MembershipViewSet, ServiceAccountViewSet
from cards.api.alerts import AlertViewSet
from cards.api.cards import ApplicationViewSet, CardFileViewSet, CardViewSet
from cards.api.jobs import CardReleaseViewSet, ProfilePlanViewSet, StationEnrolViewSet
from cards.api.orders import JobViewSet, OrderViewSet
from cards.api.profiles import ProfileViewSet
from cards.api.stations import StationViewSet
from cards.api.tenants import TenantViewSet
from cards.api.webhooks import WebhookViewSet


def register(router) -> None:
    router.register("tenants", TenantViewSet, basename="tenant")
    router.register("profiles", ProfileViewSet, basename="profile")
    router.register("profiles", ProfilePlanViewSet, basename="profile-plan")
    router.register("cards", CardViewSet, basename="card")
    router.register("cards", CardReleaseViewSet, basename="card-release")
    router.register("applications", ApplicationViewSet, basename="application")
    router.register("files", CardFileViewSet, basename="card-file")
    # before "stations": stations/enroll/ must not be taken for stations/<pk>/
    router.register("stations", StationEnrolViewSet, basename="station-enrol")
    router.register("stations", StationViewSet, basename="station")
    router.register("orders", OrderViewSet, basename="order")
    router.register("jobs", JobViewSet, basename="job")
    router.register("memberships", MembershipViewSet, basename="membership")
    router.register("service-accounts", ServiceAccountViewSet, basename="service-account")
    router.register("api-tokens", ApiTokenViewSet, basename="api-token")
    router.register("alerts", AlertViewSet, basename="alert")
    router.register("webhooks", WebhookViewSet, basename="webhook")
