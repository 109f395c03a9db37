"""Django admin for superusers: a read-only window on every model; writes go through audited services.

Every change to security state must write an audit event in its own transaction, and the
services (behind the API) do that; the admin therefore adds, changes and deletes nothing.
The one exception is Django's own user admin (people are created here): it stays writable,
and every user it creates, deletes or whose sign-in/superuser/staff flags or permissions it
changes is audited in the admin's transaction.
"""
from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.db import transaction

from audit.services import record_event
from cms.models import ApiToken, Membership, ServiceAccount

PRIVILEGE_FIELDS = ("is_active", "is_staff", "is_superuser")


def _grants(user) -> dict[str, list[str]]:
    if user.pk is None:
        return {"groups": [], "permissions": []}
    return {"groups": sorted(user.groups.values_list("name", flat=True)),
            "permissions": sorted(f"{app}.{code}" for app, code in
                                  user.user_permissions.values_list("content_type__app_label", "codename"))}


class AuditedUserAdmin(UserAdmin):
    def save_model(self, request, obj, form, change):
        before = {}
        if change:
            before = type(obj).objects.filter(pk=obj.pk).values(*PRIVILEGE_FIELDS).first() or {}
        super().save_model(request, obj, form, change)
        after = {field: getattr(obj, field) for field in PRIVILEGE_FIELDS}
        if not change:
            record_event(action="user.created", actor=request.user,
                         details={"user": obj.get_username(), **after})
            return
        changed = {field: {"before": before.get(field), "after": after[field]}
                   for field in PRIVILEGE_FIELDS if before.get(field) != after[field]}
        if changed:
            record_event(action="user.privileges_changed", actor=request.user,
                         details={"user": obj.get_username(), "changed": changed})

    def save_related(self, request, form, formsets, change):
        before = _grants(form.instance)
        super().save_related(request, form, formsets, change)
        after = _grants(form.instance)
        if before != after:
            record_event(action="user.permissions_changed", actor=request.user,
                         details={"user": form.instance.get_username(), "before": before, "after": after})

    def delete_model(self, request, obj):
        record_event(action="user.deleted", actor=request.user,
                     details={"user": obj.get_username(), "is_superuser": obj.is_superuser})
        super().delete_model(request, obj)

    @transaction.atomic
    def delete_queryset(self, request, queryset):
        for user in queryset:
            self.delete_model(request, user)


if admin.site.is_registered(get_user_model()):
    admin.site.unregister(get_user_model())
admin.site.register(get_user_model(), AuditedUserAdmin)


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
