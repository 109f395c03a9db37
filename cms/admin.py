"""Django admin for superusers: a read-only window on every model; writes go through audited services.

Every change to security state must write an audit event in its own transaction, and the
services (behind the API) do that; the admin therefore adds, changes and deletes nothing.
"""
from __future__ import annotations

from django.contrib import admin

from cms.models import ApiToken, Membership, ServiceAccount


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Membership)
class MembershipAdmin(ReadOnlyAdmin):
    list_display = ["user", "tenant", "role", "created_at"]
    list_filter = ["role", "tenant"]
    search_fields = ["user__username", "tenant__slug"]


@admin.register(ServiceAccount)
class ServiceAccountAdmin(ReadOnlyAdmin):
    list_display = ["name", "tenant", "role", "is_active", "created_at"]
    list_filter = ["role", "is_active", "tenant"]
    search_fields = ["name", "tenant__slug"]


@admin.register(ApiToken)
class ApiTokenAdmin(ReadOnlyAdmin):
    list_display = ["__str__", "account", "label", "created_at", "expires_at", "last_used_at", "revoked_at"]
    list_filter = ["account__tenant"]
    search_fields = ["prefix", "label", "account__name"]
    exclude = ["digest"]
