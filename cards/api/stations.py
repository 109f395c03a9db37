"""Stations: create (the enrolment token is shown once), approve, revoke, re-issue an enrolment token."""
from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.response import Response

from cards.api.base import ScopedViewSet, TenantField, resolve_tenant
from cards.models import Station
from cards.selectors import station_list
from cards.services import keyroll
from cards.services.stations import station_approve, station_create, station_enrolment_reissue, station_revoke


class StationOutput(serializers.ModelSerializer):
    tenant = serializers.SlugRelatedField(slug_field="slug", read_only=True)

    class Meta:
        model = Station
        fields = ["id", "tenant", "code", "line", "name", "status", "queue", "online", "hpke_public_key",
                  "sign_public_key", "enrolment_expires_at", "enrolled_at", "approved_at", "approved_by",
                  "revoked_at", "last_seen_at", "heartbeat_seconds", "created_at"]


class StationWithTokenOutput(StationOutput):
    enrolment_token = serializers.CharField(help_text="shown this once; the station enrols with it")

    class Meta(StationOutput.Meta):
        fields = [*StationOutput.Meta.fields, "enrolment_token"]


class StationInput(serializers.Serializer):
    tenant = TenantField(action="manage", required=False)
    code = serializers.SlugField(max_length=50, help_text="the station's queue is station.<code>")
    line = serializers.CharField(max_length=50, required=False, default="", allow_blank=True)
    name = serializers.CharField(max_length=200, required=False, default="", allow_blank=True)


class SigningKeyRollInput(serializers.Serializer):
    retire_below = serializers.IntegerField(
        min_value=1, max_value=1_000_000, required=False, allow_null=True, default=None,
        help_text="also tell stations already using the latest version to forget versions below this")
    stations = serializers.ListField(child=serializers.SlugField(max_length=50), required=False,
                                     max_length=1000, help_text="only these station codes (default: all)")


class SigningKeyRotateInput(serializers.Serializer):
    reason = serializers.CharField(max_length=200, required=False, default="", allow_blank=True,
                                   help_text="why (kept in the audit event)")


class SigningKeyRollOutput(serializers.Serializer):
    previous_version = serializers.IntegerField(required=False)
    new_version = serializers.IntegerField(required=False)
    sent = serializers.ListField(child=serializers.CharField(), help_text="stations sent a key roll")
    up_to_date = serializers.ListField(child=serializers.CharField())
    unknown = serializers.ListField(child=serializers.CharField(),
                                    help_text="approved stations whose pinned version is not recorded")


class RevokeInput(serializers.Serializer):
    reason = serializers.CharField(max_length=200, required=False, default="", allow_blank=True)


def _with_token(station: Station, token: str) -> dict:
    data = dict(StationOutput(station).data)
    data["enrolment_token"] = token
    return data


class StationViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ScopedViewSet):
    serializer_class = StationOutput

    def get_queryset(self):
        return station_list(actor=self.actor)

    @extend_schema(request=StationInput, responses={201: StationWithTokenOutput})
    def create(self, request):
        data = StationInput(data=request.data, context={"request": request})
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        tenant = resolve_tenant(values, self.actor, "manage")
        values.pop("tenant", None)
        station, token = station_create(actor=self.actor, tenant=tenant, **values)
        return Response(_with_token(station, token), status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={200: StationWithTokenOutput})
    @action(detail=True, methods=["post"], url_path="enrolment-token")
    def enrolment_token(self, request, pk=None):
        station, token = station_enrolment_reissue(actor=self.actor, station=self.get_object())
        return Response(_with_token(station, token))

    @extend_schema(request=None, responses={200: StationOutput})
    @action(detail=True, methods=["post"])
    def approve(self, request, pk=None):
        station = station_approve(actor=self.actor, station=self.get_object())
        return Response(StationOutput(station).data)

    @extend_schema(request=RevokeInput, responses={200: StationOutput})
    @action(detail=True, methods=["post"])
    def revoke(self, request, pk=None):
        data = RevokeInput(data=request.data)
        data.is_valid(raise_exception=True)
        station = station_revoke(actor=self.actor, station=self.get_object(), **data.validated_data)
        return Response(StationOutput(station).data)

    @extend_schema(request=SigningKeyRotateInput, responses={200: SigningKeyRollOutput})
    @action(detail=False, methods=["post"], url_path="signing-key-rotate")
    def signing_key_rotate(self, request):
        """Superusers: a new version of the CMS job-signing key (Vault Transit), announced to every
        approved station in a key roll signed with the version that station trusts (no re-enrolment)."""
        keyroll.ensure_key_admin(self.actor)  # 403 before any reading of the body
        data = SigningKeyRotateInput(data=request.data)
        data.is_valid(raise_exception=True)
        return Response(keyroll.signing_key_rotate(actor=self.actor, reason=data.validated_data["reason"]))

    @extend_schema(request=SigningKeyRollInput, responses={200: SigningKeyRollOutput})
    @action(detail=False, methods=["post"], url_path="signing-key-roll")
    def signing_key_roll(self, request):
        """Superusers: send the latest job-signing key version to approved stations that have not pinned
        it yet; with retire_below, tell those already using it that older versions are retired."""
        keyroll.ensure_key_admin(self.actor)  # 403 before any reading of the body
        data = SigningKeyRollInput(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        try:
            out = keyroll.key_rolls_send(actor=self.actor, retire_below=values["retire_below"],
                                         stations=values.get("stations") or None)
        except ValueError as exc:
            raise serializers.ValidationError({"retire_below": [str(exc)]}) from None
        return Response(out)
