"""GET /api/v1/audit-events/: the audit trail, read-only, scoped to the tenants the caller audits."""
from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, mixins, serializers, viewsets

from audit.models import AuditEvent
from audit.selectors import audit_event_list
from cms.api import StrictLimitOffsetPagination


class AuditEventOutput(serializers.ModelSerializer):
    class Meta:
        model = AuditEvent
        fields = ["id", "sequence", "created_at", "actor_type", "actor_id", "actor_name", "request_id",
                  "job_id", "tenant_id", "tenant_slug", "action", "result", "card_uid", "aid", "key_no",
                  "key_version", "details", "prev_hash", "hash"]
        read_only_fields = fields


class AuditEventFilter(serializers.Serializer):
    action = serializers.CharField(max_length=64, required=False)
    result = serializers.CharField(max_length=32, required=False)
    card_uid = serializers.RegexField(r"^[0-9A-Fa-f]{1,32}$", required=False, help_text="hex")
    aid = serializers.RegexField(r"^[0-9A-Fa-f]{1,32}$", required=False, help_text="hex")
    job_id = serializers.CharField(max_length=64, required=False)
    request_id = serializers.CharField(max_length=64, required=False)
    tenant = serializers.SlugField(max_length=50, required=False, source="tenant_slug")
    actor_type = serializers.CharField(max_length=16, required=False)
    actor_name = serializers.CharField(max_length=150, required=False)
    since = serializers.DateTimeField(required=False, help_text="events at or after this time")
    until = serializers.DateTimeField(required=False, help_text="events before this time")

    def validate(self, attrs):
        if attrs.get("since") and attrs.get("until") and attrs["since"] >= attrs["until"]:
            raise serializers.ValidationError({"until": ["must be after since"]})
        return attrs


class AuditPagination(StrictLimitOffsetPagination):
    max_limit = 500


@extend_schema(tags=["audit"])
class AuditEventViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    serializer_class = AuditEventOutput
    pagination_class = AuditPagination

    def get_queryset(self):
        if self.action != "list":
            return audit_event_list(actor=self.request.user)
        # A plain dict: as a QueryDict, DRF would read an empty `?action=` as "not given" (the schema says
        # at least one character).
        filters = AuditEventFilter(data=self.request.query_params.dict())
        filters.is_valid(raise_exception=True)
        return audit_event_list(actor=self.request.user, filters=filters.validated_data)

    def get_object(self):
        if not str(self.kwargs.get("pk", "")).isdigit() or len(self.kwargs["pk"]) > 18:
            raise exceptions.NotFound()
        return super().get_object()

    @extend_schema(parameters=[AuditEventFilter])
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)
