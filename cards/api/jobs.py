"""Provisioning endpoints: station enrolment (by token), the plan dry-run, releasing a quarantined card."""
from __future__ import annotations

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import exceptions, serializers, status
from rest_framework.decorators import action
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.throttling import AnonRateThrottle

from cards.api.base import ScopedPkField, ScopedViewSet
from cards.api.cards import CardOutput
from cards.models import Card
from cards.models.cards import ChipType
from cards.selectors import card_list, profile_list
from cards.services.enrolment import EnrolmentRefused, station_enroll
from cards.services.jobs import card_release, plan_preview

_HEX32 = r"^[0-9a-fA-F]{64}$"


class EnrolInput(serializers.Serializer):
    code = serializers.SlugField(max_length=50)
    token = serializers.CharField(max_length=200)
    hpke_public_key = serializers.RegexField(_HEX32, help_text="X25519 public key, raw 32 bytes in hex")
    sign_public_key = serializers.RegexField(_HEX32, help_text="Ed25519 public key, raw 32 bytes in hex")


EnrolOutput = inline_serializer("StationEnrolOutput", {
    "station": serializers.CharField(), "status": serializers.CharField(), "queue": serializers.CharField(),
    "cms_signing_public_key": serializers.CharField(help_text="Ed25519, raw 32 bytes in hex"),
    "cms_signing_key_version": serializers.IntegerField()})


class EnrolmentThrottle(AnonRateThrottle):
    scope = "anon"


class Forbidden(exceptions.PermissionDenied):
    pass


class StationEnrolViewSet(ScopedViewSet):
    """`POST /api/v1/stations/enroll/`: no user; the one-time enrolment token is the credential."""

    @extend_schema(request=EnrolInput, responses={200: EnrolOutput})
    @action(detail=False, methods=["post"], url_path="enroll", permission_classes=[AllowAny],
            authentication_classes=[], throttle_classes=[EnrolmentThrottle])
    def enroll(self, request):
        data = EnrolInput(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            _, info = station_enroll(ip=request.META.get("REMOTE_ADDR"), **data.validated_data)
        except EnrolmentRefused as exc:
            raise Forbidden({"token": [str(exc)]}) from None
        return Response(info, status=status.HTTP_200_OK)


class PlanInput(serializers.Serializer):
    card = ScopedPkField(Card, action="view", required=False, allow_null=True, default=None)
    uid = serializers.RegexField(r"^(?:[0-9A-Fa-f]{8}|[0-9A-Fa-f]{14}|[0-9A-Fa-f]{20})$", required=False,
                                 help_text="4, 7 or 10 bytes in hex (a card not registered yet)")
    chip_type = serializers.ChoiceField(choices=ChipType.choices, required=False)

    def validate(self, attrs):
        if attrs.get("card") is None and not attrs.get("uid"):
            raise serializers.ValidationError({"uid": ["give a uid (and chip_type), or an existing card"]})
        if attrs.get("card") is None and not attrs.get("chip_type"):
            raise serializers.ValidationError({"chip_type": ["this field is required with a uid"]})
        return attrs


class ProfilePlanViewSet(ScopedViewSet):
    """`POST /api/v1/profiles/<id>/plan/`: what a card would be sent, as key refs only (no Vault, no key)."""

    def get_queryset(self):
        return profile_list(actor=self.actor)

    @extend_schema(request=PlanInput, responses={200: inline_serializer("Plan", {
        "chip_family": serializers.CharField(), "uid": serializers.CharField(),
        "chip_type": serializers.CharField(), "probe": serializers.BooleanField(),
        "holds": serializers.DictField(), "gets": serializers.DictField(),
        "needs_versions": serializers.ListField(child=serializers.CharField()),
        "refs": serializers.ListField(child=serializers.CharField()), "script": serializers.DictField(),
        "script_digest": serializers.CharField()})})
    @action(detail=True, methods=["post"])
    def plan(self, request, pk=None):
        profile = self.get_object()
        data = PlanInput(data=request.data, context={"request": request})
        data.is_valid(raise_exception=True)
        plan = plan_preview(actor=self.actor, profile=profile, card=data.validated_data.get("card"),
                            uid=data.validated_data.get("uid", ""),
                            chip_type=data.validated_data.get("chip_type", ""))
        return Response(plan.as_dict())


class ReleaseInput(serializers.Serializer):
    reason = serializers.CharField(max_length=200,
                                   help_text="why a person decided the card may be used again")


class CardReleaseViewSet(ScopedViewSet):
    """`POST /api/v1/cards/<id>/release/`: a person releases a quarantined card (audited)."""

    def get_queryset(self):
        return card_list(actor=self.actor)

    @extend_schema(request=ReleaseInput, responses={200: CardOutput})
    @action(detail=True, methods=["post"])
    def release(self, request, pk=None):
        data = ReleaseInput(data=request.data)
        data.is_valid(raise_exception=True)
        card = card_release(actor=self.actor, card=self.get_object(), reason=data.validated_data["reason"])
        return Response(CardOutput(card).data)
