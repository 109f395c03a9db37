"""Every web page and action, taken from the URLconf, against an anonymous visitor, an admin of
another tenant and the roles of the tenant itself. A new page that is not listed here fails."""
from __future__ import annotations

import pytest
from django.urls import URLPattern, reverse

from audit.models import AuditEvent
from cms.web import urls as web_urls
from tests.web.conftest import web_client

pytestmark = pytest.mark.django_db

PUBLIC = {"login", "logout"}
# Which object of acme_world each parameterised URL opens (add a new page here).
OBJECT_FOR = {
    "profile": "profile", "profile_plan": "profile", "station_approve": "station",
    "station_revoke": "station", "order": "order",
    "job": "job", "card": "card", "card_suspend": "card", "card_resume": "card", "card_revoke": "card",
    "card_replace": "card",
    "campaign": "campaign", "campaign_approve": "campaign", "campaign_start": "campaign",
    "campaign_pause": "campaign", "campaign_resume": "campaign", "campaign_rollback": "campaign",
    "campaign_cancel": "campaign", "kek_approve": "kek_rotation", "alert_ack": "alert",
}
OTHER_PARAMS = {"audit_export": {"fmt": "csv"}}
# What only acme's pages would show: none of it may reach an admin of globex.
ACME_MARKERS = ["04A1B2C3D4E5F6", "acme-secret-campaign", "acme-line-1", "acme"]
# Which role (in the current tenant) each page needs: manage pages are for admins, audit for admin/auditor.
MANAGE = {"station_approve", "station_revoke", "card_suspend", "card_resume", "card_revoke", "card_replace",
          "campaigns",
          "kek", "kek_approve", "alert_ack"} | {name for name in OBJECT_FOR if name.startswith("campaign")}
AUDIT = {"audit", "audit_export", "audit_verify", "alerts"}


def _patterns() -> list[URLPattern]:
    return [p for p in web_urls.urlpatterns if isinstance(p, URLPattern)]


def _url(pattern: URLPattern, world) -> str:
    kwargs = dict(OTHER_PARAMS.get(pattern.name, {}))
    if "pk" in pattern.pattern.converters:
        assert pattern.name in OBJECT_FOR, f"web:{pattern.name} opens an object: add it to OBJECT_FOR"
        kwargs["pk"] = world[OBJECT_FOR[pattern.name]].pk
    missing = set(pattern.pattern.converters) - set(kwargs)
    assert not missing, f"web:{pattern.name} needs {missing}: add them to OTHER_PARAMS"
    return reverse(f"web:{pattern.name}", kwargs=kwargs)


def _names():
    return [p.name for p in _patterns()]


def test_the_web_ui_is_mounted_at_the_root_beside_admin_api_health_and_metrics(client):
    assert reverse("web:dashboard") == "/"
    assert client.get("/health").status_code in (200, 503)
    assert client.get("/metrics").status_code == 200
    assert client.get("/admin/login/").status_code == 200
    assert client.get("/api/v1/cards/").status_code in (401, 403)


@pytest.mark.parametrize("name", _names())
def test_anonymous_is_sent_to_login(name, acme_world):
    if name in PUBLIC:
        return
    url = _url(next(p for p in _patterns() if p.name == name), acme_world)
    for method in ("get", "post"):
        response = getattr(web_client(), method)(url)
        assert response.status_code == 302, (method, url, response.status_code)
        assert response["Location"].startswith("/login/"), response["Location"]


@pytest.mark.parametrize("name", _names())
def test_admin_of_another_tenant_gets_nothing_of_acme(name, acme_world, other_admin):
    if name in PUBLIC:
        return
    pattern = next(p for p in _patterns() if p.name == name)
    url = _url(pattern, acme_world)
    client = web_client(other_admin)
    before = AuditEvent.objects.filter(tenant_slug="acme").count()
    if "pk" in pattern.pattern.converters:
        for method in ("get", "post"):
            response = getattr(client, method)(url, {"reason": "lost"} if method == "post" else None)
            # a GET on an action is 405 for everyone: it tells nothing about the object
            allowed = (403, 404) if method == "post" else (403, 404, 405)
            assert response.status_code in allowed, (method, url, response.status_code)
    else:
        response = client.get(url)
        assert response.status_code in (200, 405), (url, response.status_code)
        body = b"".join(response.streaming_content) if response.streaming else response.content
        for marker in ACME_MARKERS:
            assert marker.encode() not in body, (url, marker)
    # nothing of acme changed, and nothing was done in its name
    world = acme_world
    world["campaign"].refresh_from_db()
    world["card"].refresh_from_db()
    world["station"].refresh_from_db()
    world["kek_rotation"].refresh_from_db()
    world["alert"].refresh_from_db()
    assert world["campaign"].state == "awaiting_approval"
    assert world["card"].state == "active"
    assert world["station"].status == "enrolled"
    assert world["kek_rotation"].state == "awaiting_approval"
    assert world["alert"].state == "open"
    assert AuditEvent.objects.filter(tenant_slug="acme").count() == before


def test_the_switcher_refuses_a_tenant_the_user_has_no_role_in(acme_world, other_admin, acme):
    response = web_client(other_admin).post(reverse("web:switch_tenant"), {"tenant": acme.pk})
    assert response.status_code == 404


@pytest.mark.parametrize("name", sorted(MANAGE))
def test_operators_and_auditors_cannot_reach_admin_pages(name, acme_world, operator, auditor):
    url = _url(next(p for p in _patterns() if p.name == name), acme_world)
    for user in (operator, auditor):
        for method in ("get", "post"):
            assert getattr(web_client(user), method)(url).status_code == 403, (user, method, url)
        assert name not in ("campaigns", "kek") or "Key rotation" not in \
            web_client(user).get("/").content.decode()  # and the menu does not offer it


@pytest.mark.parametrize("name", sorted(AUDIT))
def test_audit_is_for_admins_and_auditors_not_operators(name, acme_world, operator, auditor, admin):
    url = _url(next(p for p in _patterns() if p.name == name), acme_world)
    method = "post" if name == "audit_verify" else "get"
    assert getattr(web_client(operator), method)(url).status_code == 403
    assert getattr(web_client(auditor), method)(url).status_code == 200
    assert getattr(web_client(admin), method)(url).status_code == 200


def test_every_page_is_listed_in_a_role_rule_or_open_to_all_roles():
    readable_by_all = {"dashboard", "tenants", "profiles", "profile", "profile_plan", "stations", "orders",
                       "order", "job", "cards", "card", "reauth", "switch_tenant"}
    assert set(_names()) == PUBLIC | MANAGE | AUDIT | readable_by_all
