"""Card profiles: list, read, create a (new version of a) profile, validate a spec, deactivate."""
from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.response import Response

from cards.api.base import QueryBooleanField, ScopedViewSet, TenantField, resolve_tenant
from cards.models import CardProfile
from cards.profiles import MAX_SPEC_BYTES
from cards.selectors import profile_list
from cards.services.profiles import profile_create, profile_deactivate, profile_validate


class ProfileOutput(serializers.ModelSerializer):
    tenant = serializers.SlugRelatedField(slug_field="slug", read_only=True)

    class Meta:
        model = CardProfile
        fields = ["id", "tenant", "name", "version", "chip_family", "description", "spec", "is_active",
                  "created_by", "created_at"]


class ProfileInput(serializers.Serializer):
    tenant = TenantField(action="manage", required=False,
                         help_text="slug; may be left out by a caller who administers one tenant")
    name = serializers.SlugField(max_length=80)
    description = serializers.CharField(max_length=2000, required=False, default="", allow_blank=True)
    spec = serializers.JSONField(help_text=f"the card profile spec (see cards/profiles.py), at most "
                                           f"{MAX_SPEC_BYTES // 1024} KiB")


class SpecCheckInput(serializers.Serializer):
    tenant = TenantField(action="manage", required=False)
    spec = serializers.JSONField()


class SpecCheckOutput(serializers.Serializer):
    valid = serializers.BooleanField()
    errors = serializers.DictField(child=serializers.ListField(child=serializers.CharField()))


class ProfileFilter(serializers.Serializer):
    name = serializers.CharField(max_length=100, required=False)
    active = QueryBooleanField(required=False)


class ProfileViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ScopedViewSet):
    serializer_class = ProfileOutput

    def get_queryset(self):
        return profile_list(actor=self.actor, **self.list_filters(ProfileFilter))

    @extend_schema(parameters=[ProfileFilter])
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    @extend_schema(request=ProfileInput, responses={201: ProfileOutput})
    def create(self, request):
        data = ProfileInput(data=request.data, context={"request": request})
        data.is_valid(raise_exception=True)
        tenant = resolve_tenant(data.validated_data, self.actor, "manage")
        profile = profile_create(actor=self.actor, tenant=tenant, name=data.validated_data["name"],
                                 spec=data.validated_data["spec"],
                                 description=data.validated_data["description"])
        return Response(ProfileOutput(profile).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=SpecCheckInput, responses={200: SpecCheckOutput})
    @action(detail=False, methods=["post"], url_path="validate")
    def validate_spec(self, request):
        """Check a spec against the tenant without saving it: every error, by JSON path."""
        data = SpecCheckInput(data=request.data, context={"request": request})
        data.is_valid(raise_exception=True)
        tenant = resolve_tenant(data.validated_data, self.actor, "manage")
        errors = profile_validate(actor=self.actor, tenant=tenant, spec=data.validated_data["spec"])
        return Response({"valid": not errors, "errors": errors})

    @extend_schema(request=None, responses={200: ProfileOutput})
    @action(detail=True, methods=["post"])
    def deactivate(self, request, pk=None):
        profile = profile_deactivate(actor=self.actor, profile=self.get_object())
        return Response(ProfileOutput(profile).data)
