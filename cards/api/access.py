"""Who may act for a tenant: memberships, service accounts and their API tokens (tenant admins only)."""
from __future__ import annotations

from django.contrib.auth import get_user_model
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.response import Response

from cards.api.base import ScopedPkField, ScopedViewSet, TenantField, id_filter, resolve_tenant
from cards.selectors import api_token_list, membership_list, service_account_list
from cards.services.access import (
    SERVICE_ACCOUNT_ROLES,
    api_token_issue,
    api_token_revoke,
    membership_change,
    membership_grant,
    membership_remove,
    service_account_create,
    service_account_deactivate,
)
from cms.models import ApiToken, Membership, Role, ServiceAccount

PERSON_ROLES = [(Role.ADMIN, "Tenant admin"), (Role.OPERATOR, "Operator"), (Role.AUDITOR, "Auditor")]


class MembershipOutput(serializers.ModelSerializer):
    tenant = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    username = serializers.CharField(source="user.username", read_only=True)

    class Meta:
        model = Membership
        fields = ["id", "tenant", "username", "role", "created_at"]


class MembershipInput(serializers.Serializer):
    tenant = TenantField(action="manage", required=False)
    username = serializers.CharField(max_length=150)
    role = serializers.ChoiceField(choices=PERSON_ROLES)

    def validate_username(self, value: str):
        user = get_user_model().objects.filter(username=value, is_active=True).first()
        if user is None:
            raise serializers.ValidationError("no active user with this username")
        return user


class MembershipChangeInput(serializers.Serializer):
    role = serializers.ChoiceField(choices=PERSON_ROLES)


class MembershipViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ScopedViewSet):
    serializer_class = MembershipOutput

    def get_queryset(self):
        return membership_list(actor=self.actor)

    @extend_schema(request=MembershipInput, responses={201: MembershipOutput})
    def create(self, request):
        data = MembershipInput(data=request.data, context={"request": request})
        data.is_valid(raise_exception=True)
        tenant = resolve_tenant(data.validated_data, self.actor, "manage")
        membership = membership_grant(actor=self.actor, tenant=tenant, user=data.validated_data["username"],
                                      role=data.validated_data["role"])
        return Response(MembershipOutput(membership).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=MembershipChangeInput, responses={200: MembershipOutput})
    def partial_update(self, request, pk=None):
        membership = self.get_object()
        data = MembershipChangeInput(data=request.data)
        data.is_valid(raise_exception=True)
        membership = membership_change(actor=self.actor, membership=membership,
                                       role=data.validated_data["role"])
        return Response(MembershipOutput(membership).data)

    def destroy(self, request, pk=None):
        membership_remove(actor=self.actor, membership=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


class ServiceAccountOutput(serializers.ModelSerializer):
    tenant = serializers.SlugRelatedField(slug_field="slug", read_only=True)

    class Meta:
        model = ServiceAccount
        fields = ["id", "tenant", "name", "role", "is_active", "created_by", "created_at"]


class ServiceAccountInput(serializers.Serializer):
    tenant = TenantField(action="manage", required=False)
    name = serializers.SlugField(max_length=80)
    role = serializers.ChoiceField(choices=[(r, r) for r in SERVICE_ACCOUNT_ROLES], default=Role.MES)


class ServiceAccountViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ScopedViewSet):
    serializer_class = ServiceAccountOutput

    def get_queryset(self):
        return service_account_list(actor=self.actor)

    @extend_schema(request=ServiceAccountInput, responses={201: ServiceAccountOutput})
    def create(self, request):
        data = ServiceAccountInput(data=request.data, context={"request": request})
        data.is_valid(raise_exception=True)
        tenant = resolve_tenant(data.validated_data, self.actor, "manage")
        account = service_account_create(actor=self.actor, tenant=tenant, name=data.validated_data["name"],
                                         role=data.validated_data["role"])
        return Response(ServiceAccountOutput(account).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={200: ServiceAccountOutput})
    @action(detail=True, methods=["post"])
    def deactivate(self, request, pk=None):
        account = service_account_deactivate(actor=self.actor, account=self.get_object())
        return Response(ServiceAccountOutput(account).data)


class ApiTokenOutput(serializers.ModelSerializer):
    """The public prefix only: the token itself is never shown again, and its digest never."""

    account_name = serializers.CharField(source="account.name", read_only=True)
    usable = serializers.BooleanField(read_only=True)

    class Meta:
        model = ApiToken
        fields = ["id", "account", "account_name", "prefix", "label", "created_at", "expires_at",
                  "last_used_at", "revoked_at", "usable"]


class ApiTokenIssuedOutput(ApiTokenOutput):
    token = serializers.CharField(help_text="the plain token, shown this once: "
                                            "send it as `Authorization: Bearer <token>`")

    class Meta(ApiTokenOutput.Meta):
        fields = [*ApiTokenOutput.Meta.fields, "token"]


class ApiTokenInput(serializers.Serializer):
    account = ScopedPkField(ServiceAccount, action="manage")
    label = serializers.CharField(max_length=100, required=False, default="", allow_blank=True)
    expires_at = serializers.DateTimeField(required=False, allow_null=True, default=None)


class ApiTokenFilter(serializers.Serializer):
    account = id_filter(source="account_id")


class ApiTokenViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ScopedViewSet):
    serializer_class = ApiTokenOutput

    def get_queryset(self):
        return api_token_list(actor=self.actor, **self.list_filters(ApiTokenFilter))

    @extend_schema(parameters=[ApiTokenFilter])
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    @extend_schema(request=ApiTokenInput, responses={201: ApiTokenIssuedOutput})
    def create(self, request):
        data = ApiTokenInput(data=request.data, context={"request": request})
        data.is_valid(raise_exception=True)
        token, plain = api_token_issue(actor=self.actor, **data.validated_data)
        body = dict(ApiTokenOutput(token).data)
        body["token"] = plain
        return Response(body, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={200: ApiTokenOutput})
    @action(detail=True, methods=["post"])
    def revoke(self, request, pk=None):
        token = api_token_revoke(actor=self.actor, token=self.get_object())
        return Response(ApiTokenOutput(token).data)
