"""Who is looking: the current tenant of the session, the role held there, and re-authentication.

Every list a page shows is `cms.scoping.restrict`-ed first and then narrowed to the current
tenant; every object a page opens comes from a restricted queryset (another tenant's object is a
404), and every write goes through a service that re-checks with `ensure_allowed`.
"""
from __future__ import annotations

import time
from functools import wraps
from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme

from cards.models import Tenant
from cms.models import Membership, Role
from cms.scoping import ACTION_ROLES

SESSION_TENANT = "web_tenant_id"
SESSION_REAUTH = "web_reauth_at"


def tenant_choices(user) -> list[tuple[Tenant, str]]:
    """(tenant, role) for every tenant the user may switch to; superusers see all tenants as admin."""
    if not user.is_authenticated:
        return []
    roles = dict(Membership.objects.filter(user=user).values_list("tenant_id", "role"))
    if user.is_superuser:
        return [(t, roles.get(t.pk, Role.ADMIN)) for t in Tenant.objects.order_by("slug")]
    tenants = Tenant.objects.filter(pk__in=roles).order_by("slug")
    return [(t, roles[t.pk]) for t in tenants]


def current(request) -> tuple[Tenant | None, str]:
    """(tenant, role) the session works in: the one chosen with the switcher, else the first."""
    cached = getattr(request, "_web_current", None)
    if cached is not None:
        return cached
    choices = tenant_choices(request.user)
    chosen = request.session.get(SESSION_TENANT)
    found = next(((t, r) for t, r in choices if t.pk == chosen), None) \
        or (choices[0] if choices else (None, ""))
    request._web_current = found
    return found


def may(request, action: str) -> bool:
    _, role = current(request)
    return role in ACTION_ROLES[action]


def page(action: str = "view"):
    """A page for signed-in users whose role in the current tenant allows `action` (else 403)."""
    def decorate(view):
        @login_required
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            if not may(request, action):
                raise PermissionDenied(f"your role in this tenant does not allow {action}")
            return view(request, *args, **kwargs)
        return wrapper
    return decorate


def mark_recent_auth(request) -> None:
    request.session[SESSION_REAUTH] = time.time()


def recently_authenticated(request) -> bool:
    at = request.session.get(SESSION_REAUTH)
    return at is not None and time.time() - float(at) < settings.REAUTH_WINDOW_SECONDS


def safe_next(request, fallback: str) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()},
                                                  require_https=request.is_secure()):
        return target
    return fallback


def reauth_required(view):
    """Sensitive actions need the password again unless it was given in the last few minutes.

    Without it the action is NOT carried out: the user goes to the password prompt and comes
    back to the page to press the button again (a POST is never replayed behind their back).
    """
    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if not recently_authenticated(request):
            back = safe_next(request, request.META.get("HTTP_REFERER") or reverse("web:dashboard"))
            if not url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}):
                back = reverse("web:dashboard")
            return redirect(f"{reverse('web:reauth')}?{urlencode({'next': back})}")
        return view(request, *args, **kwargs)
    return wrapper
