"""MES webhooks: receivers per tenant (the signing secret is shown once) and their delivery log."""
from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.response import Response

from cards.api.base import ScopedViewSet, TenantField, resolve_tenant
from cards.models.webhooks import WebhookDelivery, WebhookEndpoint, WebhookEvent
from cards.webhooks import webhook_endpoint_create, webhook_endpoint_deactivate, webhook_endpoint_list


class WebhookOutput(serializers.ModelSerializer):
    tenant = serializers.SlugRelatedField(slug_field="slug", read_only=True)

    class Meta:
        model = WebhookEndpoint
        fields = ["id", "tenant", "url", "events", "is_active", "created_by", "created_at"]


class WebhookWithSecretOutput(WebhookOutput):
    secret = serializers.CharField(help_text="hex; shown this once. Signature key: bytes.fromhex(secret)")

    class Meta(WebhookOutput.Meta):
        fields = [*WebhookOutput.Meta.fields, "secret"]


class WebhookInput(serializers.Serializer):
    tenant = TenantField(action="manage", required=False)
    url = serializers.URLField(max_length=500)
    events = serializers.ListField(child=serializers.ChoiceField(choices=WebhookEvent.choices), min_length=1,
                                   max_length=len(WebhookEvent.values))


class DeliveryOutput(serializers.ModelSerializer):
    class Meta:
        model = WebhookDelivery
        fields = ["id", "event", "payload", "state", "attempts", "last_status", "last_error", "created_at",
                  "last_attempt_at", "next_attempt_at", "delivered_at"]


class DeliveryPage(serializers.Serializer):
    """The limit/offset page the deliveries action answers with."""

    count = serializers.IntegerField()
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = DeliveryOutput(many=True)


class WebhookViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ScopedViewSet):
    serializer_class = WebhookOutput

    def get_queryset(self):
        return webhook_endpoint_list(actor=self.actor)

    @extend_schema(request=WebhookInput, responses={201: WebhookWithSecretOutput})
    def create(self, request):
        data = WebhookInput(data=request.data, context={"request": request})
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        tenant = resolve_tenant(values, self.actor, "manage")
        endpoint, secret = webhook_endpoint_create(actor=self.actor, tenant=tenant, url=values["url"],
                                                   events=values["events"])
        body = dict(WebhookOutput(endpoint).data)
        body["secret"] = secret
        return Response(body, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={200: WebhookOutput})
    @action(detail=True, methods=["post"])
    def deactivate(self, request, pk=None):
        endpoint = webhook_endpoint_deactivate(actor=self.actor, endpoint=self.get_object())
        return Response(WebhookOutput(endpoint).data)

    @extend_schema(request=None, responses={200: DeliveryPage})
    @action(detail=True, methods=["get"])
    def deliveries(self, request, pk=None):
        deliveries = self.get_object().deliveries.order_by("-created_at")
        page = self.paginate_queryset(deliveries)
        return self.get_paginated_response(DeliveryOutput(page, many=True).data)
