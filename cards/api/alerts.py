"""Alerts: read (admins and auditors of the tenant) and acknowledge (admins); the rules run on beat."""
from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers
from rest_framework.decorators import action
from rest_framework.response import Response

from audit.alerts import RULES, alert_acknowledge, alert_list
from audit.models import Alert, AlertState
from cards.api.base import ScopedViewSet


class AlertOutput(serializers.ModelSerializer):
    tenant = serializers.CharField(source="tenant_slug", read_only=True)

    class Meta:
        model = Alert
        fields = ["id", "tenant", "rule", "subject", "state", "message", "details", "count", "first_seen_at",
                  "last_seen_at", "acknowledged_at", "acknowledged_by", "closed_at"]


class AlertFilter(serializers.Serializer):
    state = serializers.ChoiceField(choices=AlertState.choices, required=False)
    rule = serializers.ChoiceField(choices=sorted(RULES), required=False)


class AcknowledgeInput(serializers.Serializer):
    note = serializers.CharField(max_length=200, required=False, default="", allow_blank=True)


class AlertViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ScopedViewSet):
    serializer_class = AlertOutput

    def get_queryset(self):
        return alert_list(actor=self.actor, **self.list_filters(AlertFilter))

    @extend_schema(parameters=[AlertFilter])
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    @extend_schema(request=AcknowledgeInput, responses={200: AlertOutput})
    @action(detail=True, methods=["post"])
    def acknowledge(self, request, pk=None):
        data = AcknowledgeInput(data=request.data)
        data.is_valid(raise_exception=True)
        alert = alert_acknowledge(actor=self.actor, alert=self.get_object(), **data.validated_data)
        return Response(AlertOutput(alert).data)
