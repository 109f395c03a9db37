"""Template context for every page: the tenant switcher and a menu fitted to the user's role."""
from __future__ import annotations

from cms.web.access import current, may, tenant_choices

# (url name, label, action the role must allow)
MENU = [
    ("web:dashboard", "Dashboard", "view"),
    ("web:tenants", "Tenants", "view"),
    ("web:profiles", "Profiles", "view"),
    ("web:stations", "Stations", "view"),
    ("web:orders", "Orders & jobs", "view"),
    ("web:cards", "Cards", "view"),
    ("web:campaigns", "Key rotation", "manage"),
    ("web:kek", "KEK rotation", "manage"),
    ("web:audit", "Audit", "view_audit"),
    ("web:alerts", "Alerts", "view_audit"),
]


def navigation(request) -> dict:
    if not getattr(request, "user", None) or not request.user.is_authenticated \
            or not request.resolver_match or request.resolver_match.namespace != "web":
        return {}
    tenant, role = current(request)
    return {
        "web_tenant": tenant,
        "web_role": role,
        "web_tenants": tenant_choices(request.user),
        "web_menu": [(name, label) for name, label, action in MENU if may(request, action)],
        "web_can_manage": may(request, "manage"),
    }
