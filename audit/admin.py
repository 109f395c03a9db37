"""Read-only admin for audit events: no add, change or delete, and scoped like the API for non-superusers."""
from django.contrib import admin

from audit.models import AuditEvent
from cms.scoping import restrict


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ["sequence", "created_at", "action", "result", "actor_type", "actor_name", "tenant_slug",
                    "card_uid", "aid", "key_no", "key_version", "job_id"]
    list_filter = ["result", "actor_type", "action", "tenant_slug"]
    search_fields = ["action", "actor_name", "card_uid", "aid", "job_id", "request_id"]
    date_hierarchy = "created_at"
    ordering = ["-sequence"]
    readonly_fields = [field.name for field in AuditEvent._meta.fields]
    show_full_result_count = False

    def get_queryset(self, request):
        return restrict(super().get_queryset(request), request.user, "view_audit")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
