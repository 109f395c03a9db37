"""Reads for the card side: every queryset a caller reaches is scoped by cms.scoping.restrict."""
from __future__ import annotations

from django.db.models import QuerySet

from cards.models import Application, Card, CardFile, CardProfile, Job, Order, Station, Tenant
from cms.models import ApiToken, Membership, ServiceAccount
from cms.scoping import restrict


def tenant_list(*, actor, action: str = "view") -> QuerySet[Tenant]:
    return restrict(Tenant.objects.all(), actor, action)


def profile_list(*, actor, name: str | None = None, active: bool | None = None) -> QuerySet[CardProfile]:
    qs = CardProfile.objects.select_related("tenant")
    if name:
        qs = qs.filter(name=name)
    if active is not None:
        qs = qs.filter(is_active=active)
    return restrict(qs, actor, "view")


def card_list(*, actor, uid: str | None = None, state: str | None = None) -> QuerySet[Card]:
    qs = Card.objects.select_related("tenant", "profile", "last_station")
    if uid:
        qs = qs.filter(uid=uid.upper())
    if state:
        qs = qs.filter(state=state)
    return restrict(qs, actor, "view")


def application_list(*, actor, card_uid: str | None = None) -> QuerySet[Application]:
    qs = Application.objects.select_related("tenant", "card")
    if card_uid:
        qs = qs.filter(card__uid=card_uid.upper())
    return restrict(qs, actor, "view")


def card_file_list(*, actor, application_id: int | None = None) -> QuerySet[CardFile]:
    qs = CardFile.objects.select_related("application", "application__card")
    if application_id is not None:
        qs = qs.filter(application_id=application_id)
    return restrict(qs, actor, "view")


def station_list(*, actor) -> QuerySet[Station]:
    return restrict(Station.objects.select_related("tenant"), actor, "view")


def order_list(*, actor, state: str | None = None) -> QuerySet[Order]:
    qs = Order.objects.select_related("tenant", "profile", "station")
    if state:
        qs = qs.filter(state=state)
    return restrict(qs, actor, "view")


def job_list(*, actor, state: str | None = None, order_id: int | None = None,
             card_uid: str | None = None) -> QuerySet[Job]:
    qs = Job.objects.select_related("tenant", "card", "station", "order")
    if state:
        qs = qs.filter(state=state)
    if order_id is not None:
        qs = qs.filter(order_id=order_id)
    if card_uid:
        qs = qs.filter(card__uid=card_uid.upper())
    return restrict(qs, actor, "view")


# Who-may-act records are for the tenant's admins only.


def membership_list(*, actor) -> QuerySet[Membership]:
    return restrict(Membership.objects.select_related("tenant", "user"), actor, "manage").order_by("pk")


def service_account_list(*, actor) -> QuerySet[ServiceAccount]:
    return restrict(ServiceAccount.objects.select_related("tenant"), actor, "manage").order_by("pk")


def api_token_list(*, actor, account_id: int | None = None) -> QuerySet[ApiToken]:
    qs = ApiToken.objects.select_related("account", "account__tenant")
    if account_id is not None:
        qs = qs.filter(account_id=account_id)
    return restrict(qs, actor, "manage").order_by("pk")
