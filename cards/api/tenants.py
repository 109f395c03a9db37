"""Tenants: superusers create and edit them; members see their own."""
from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status
from rest_framework.response import Response

from cards.api.base import ScopedViewSet
from cards.models import Tenant
from cards.selectors import tenant_list
from cards.services.tenants import tenant_create, tenant_update


class TenantOutput(serializers.ModelSerializer):
    desfire_aid_range = serializers.SerializerMethodField()

    class Meta:
        model = Tenant
        fields = ["id", "slug", "name", "gp_aid_prefix", "desfire_aid_first", "desfire_aid_last",
                  "desfire_aid_range", "is_active", "created_at"]

    def get_desfire_aid_range(self, tenant: Tenant) -> str:
        return f"{tenant.desfire_aid_first:06X}-{tenant.desfire_aid_last:06X}"


class TenantCreateInput(serializers.Serializer):
    slug = serializers.SlugField(max_length=50)
    name = serializers.CharField(max_length=200)
    gp_aid_prefix = serializers.RegexField(r"^(?:[0-9A-Fa-f]{2}){5,16}$", max_length=32,
                                           help_text="hex, 5-16 bytes, e.g. A00000061700CAFE0001")
    desfire_aid_first = serializers.IntegerField(min_value=1, max_value=0xFFFFFF)
    desfire_aid_last = serializers.IntegerField(min_value=1, max_value=0xFFFFFF)
    is_active = serializers.BooleanField(default=True)


class TenantUpdateInput(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False)
    gp_aid_prefix = serializers.RegexField(r"^(?:[0-9A-Fa-f]{2}){5,16}$", max_length=32, required=False)
    desfire_aid_first = serializers.IntegerField(min_value=1, max_value=0xFFFFFF, required=False)
    desfire_aid_last = serializers.IntegerField(min_value=1, max_value=0xFFFFFF, required=False)
    is_active = serializers.BooleanField(required=False)


class TenantViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ScopedViewSet):
    serializer_class = TenantOutput

    def get_queryset(self):
        return tenant_list(actor=self.actor)

    @extend_schema(request=TenantCreateInput, responses={201: TenantOutput})
    def create(self, request):
        data = TenantCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        tenant = tenant_create(actor=self.actor, **data.validated_data)
        return Response(TenantOutput(tenant).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=TenantUpdateInput, responses={200: TenantOutput})
    def partial_update(self, request, pk=None):
        tenant = self.get_object()
        data = TenantUpdateInput(data=request.data)
        data.is_valid(raise_exception=True)
        tenant = tenant_update(actor=self.actor, tenant=tenant, **data.validated_data)
        return Response(TenantOutput(tenant).data)
