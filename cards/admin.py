"""Django admin (superusers, read only) for tenants, profiles, cards, stations, orders and jobs."""
from __future__ import annotations

from django.contrib import admin

from cards.models import Application, Card, CardFile, CardProfile, Job, Order, Station, Tenant
from cms.admin import ReadOnlyAdmin


@admin.register(Tenant)
class TenantAdmin(ReadOnlyAdmin):
    list_display = ["slug", "name", "gp_aid_prefix", "desfire_aid_first", "desfire_aid_last", "is_active"]
    search_fields = ["slug", "name"]


@admin.register(CardProfile)
class CardProfileAdmin(ReadOnlyAdmin):
    list_display = ["name", "version", "tenant", "chip_family", "is_active", "created_at"]
    list_filter = ["chip_family", "is_active", "tenant"]
    search_fields = ["name"]


class ApplicationInline(admin.TabularInline):
    model = Application
    extra = 0
    fields = ["kind", "aid", "key_settings", "key_type", "num_keys", "created_at"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Card)
class CardAdmin(ReadOnlyAdmin):
    list_display = ["uid", "tenant", "chip_type", "state", "probe_required", "last_seen_at"]
    list_filter = ["chip_type", "state", "probe_required", "tenant"]
    search_fields = ["uid"]
    inlines = [ApplicationInline]


@admin.register(Application)
class ApplicationAdmin(ReadOnlyAdmin):
    list_display = ["aid", "card", "tenant", "kind", "key_type", "num_keys"]
    list_filter = ["kind", "tenant"]
    search_fields = ["aid", "card__uid"]


@admin.register(CardFile)
class CardFileAdmin(ReadOnlyAdmin):
    list_display = ["application", "file_no", "file_type", "comm_mode"]
    list_filter = ["file_type", "comm_mode"]
    search_fields = ["application__aid", "application__card__uid"]


@admin.register(Station)
class StationAdmin(ReadOnlyAdmin):
    list_display = ["code", "tenant", "line", "status", "last_seen_at"]
    list_filter = ["status", "tenant"]
    search_fields = ["code", "name", "line"]
    exclude = ["enrolment_token_digest"]


@admin.register(Order)
class OrderAdmin(ReadOnlyAdmin):
    list_display = ["id", "tenant", "profile", "station", "state", "quantity", "cards_done", "cards_failed",
                    "created_at"]
    list_filter = ["state", "tenant"]
    search_fields = ["idempotency_key", "line"]


@admin.register(Job)
class JobAdmin(ReadOnlyAdmin):
    list_display = ["id", "tenant", "card", "station", "state", "stage_reached", "created_at"]
    list_filter = ["state", "tenant"]
    search_fields = ["card__uid", "station__code"]
