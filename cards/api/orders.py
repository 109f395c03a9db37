"""MES orders (POST is idempotent by the Idempotency-Key header) and the jobs they become (read only)."""
from __future__ import annotations

import re
import uuid

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, mixins, serializers, status
from rest_framework.response import Response

from cards.api.base import ScopedPkField, ScopedViewSet, TenantField, id_filter, resolve_tenant, uid_filter
from cards.models import CardProfile, Job, Order, Station
from cards.models.orders import JobState, OrderState
from cards.selectors import job_list, order_list
from cards.services.orders import MAX_QUANTITY, MAX_UIDS, order_create, order_replay, request_fingerprint

_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7E]{1,100}$")
IDEMPOTENCY_HEADER = OpenApiParameter(
    "Idempotency-Key", OpenApiTypes.STR, OpenApiParameter.HEADER, required=True,
    description="1-100 printable ASCII characters, unique per order: the same key with the same body returns "
                "the order made the first time (200); with another body it is refused (409)")


class OrderOutput(serializers.ModelSerializer):
    tenant = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    station = serializers.SlugRelatedField(slug_field="code", read_only=True, allow_null=True)

    class Meta:
        model = Order
        fields = ["id", "tenant", "profile", "station", "line", "quantity", "uids", "idempotency_key",
                  "state", "cards_claimed", "cards_done", "cards_failed", "created_by", "created_at",
                  "updated_at"]


class OrderInput(serializers.Serializer):
    tenant = TenantField(action="operate", required=False)
    profile = ScopedPkField(CardProfile, action="operate")
    station = ScopedPkField(Station, action="operate", required=False, allow_null=True, default=None)
    line = serializers.CharField(max_length=50, required=False, default="", allow_blank=True)
    quantity = serializers.IntegerField(min_value=1, max_value=MAX_QUANTITY, required=False, allow_null=True,
                                        default=None)
    uids = serializers.ListField(child=serializers.CharField(max_length=20), max_length=MAX_UIDS,
                                 required=False, default=list)


class _TenantOnly(serializers.Serializer):
    tenant = TenantField(action="operate", required=False)


class OrderFilter(serializers.Serializer):
    state = serializers.ChoiceField(choices=OrderState.choices, required=False)


class JobFilter(serializers.Serializer):
    state = serializers.ChoiceField(choices=JobState.choices, required=False)
    order = id_filter(source="order_id")
    card_uid = uid_filter()


class OrderViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ScopedViewSet):
    serializer_class = OrderOutput

    def get_queryset(self):
        return order_list(actor=self.actor, **self.list_filters(OrderFilter))

    @extend_schema(parameters=[OrderFilter])
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    @extend_schema(request=OrderInput, parameters=[IDEMPOTENCY_HEADER],
                   responses={201: OrderOutput, 200: OrderOutput})
    def create(self, request):
        key = request.headers.get("Idempotency-Key", "")
        if not _IDEMPOTENCY_KEY.match(key):
            raise exceptions.ValidationError({"Idempotency-Key": ["this header is required: 1-100 printable "
                                                                  "ASCII characters"]})
        data = OrderInput(data=request.data, context={"request": request})
        fingerprint = request_fingerprint(request.data)
        # The tenant is needed to look the key up; a replay must not depend on the rest still being valid.
        tenant_only = _TenantOnly(data=request.data if isinstance(request.data, dict) else {},
                                  context={"request": request})
        tenant_only.is_valid(raise_exception=True)
        tenant = resolve_tenant(tenant_only.validated_data, self.actor, "operate")
        order = order_replay(actor=self.actor, tenant=tenant, idempotency_key=key, fingerprint=fingerprint)
        if order is not None:
            return Response(OrderOutput(order).data, status=status.HTTP_200_OK)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        values.pop("tenant", None)
        order, created = order_create(actor=self.actor, tenant=tenant, idempotency_key=key,
                                      fingerprint=fingerprint, **values)
        return Response(OrderOutput(order).data,
                        status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


class JobOutput(serializers.ModelSerializer):
    card_uid = serializers.CharField(source="card.uid", read_only=True)
    station = serializers.SlugRelatedField(slug_field="code", read_only=True)
    tenant = serializers.SlugRelatedField(slug_field="slug", read_only=True)

    class Meta:
        model = Job
        fields = ["id", "tenant", "order", "card", "card_uid", "station", "resumes", "state",
                  "script_version", "script_digest", "stage_reached", "steps_done", "result", "error",
                  "deliveries", "created_at", "updated_at", "dispatched_at", "finished_at"]


class JobDetailOutput(JobOutput):
    class Meta(JobOutput.Meta):
        fields = [*JobOutput.Meta.fields, "trace"]


class JobViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ScopedViewSet):
    serializer_class = JobOutput

    def get_serializer_class(self):
        return JobDetailOutput if self.action == "retrieve" else JobOutput

    def get_queryset(self):
        return job_list(actor=self.actor, **self.list_filters(JobFilter))

    @extend_schema(parameters=[JobFilter])
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    def get_object(self):
        # Job ids are UUIDs: anything else is simply not found.
        try:
            uuid.UUID(str(self.kwargs.get("pk", "")))
        except ValueError:
            raise exceptions.NotFound()
        return super(ScopedViewSet, self).get_object()
