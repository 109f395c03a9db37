"""Cards and what is recorded on them: applications (AIDs) and files."""
from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status
from rest_framework.response import Response

from cards.api.base import (
    UID_PATTERN,
    ScopedPkField,
    ScopedViewSet,
    TenantField,
    id_filter,
    resolve_tenant,
    uid_filter,
)
from cards.models import Application, Card, CardFile, CardProfile
from cards.models.cards import AppKind, CardState, ChipType, CommMode, FileType, KeyType
from cards.selectors import application_list, card_file_list, card_list
from cards.services.cards import application_create, card_file_create, card_register


class CardOutput(serializers.ModelSerializer):
    tenant = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    last_station = serializers.SlugRelatedField(slug_field="code", read_only=True, allow_null=True)

    class Meta:
        model = Card
        fields = ["id", "uid", "tenant", "chip_type", "atr", "state", "state_reason", "profile",
                  "probe_required", "last_station", "last_seen_at", "created_at", "updated_at"]


class CardFilter(serializers.Serializer):
    uid = uid_filter()
    state = serializers.ChoiceField(choices=CardState.choices, required=False)


class ApplicationFilter(serializers.Serializer):
    card_uid = uid_filter()


class CardFileFilter(serializers.Serializer):
    application = id_filter()


class CardInput(serializers.Serializer):
    tenant = TenantField(action="manage", required=False)
    uid = serializers.RegexField(UID_PATTERN, help_text="4, 7 or 10 bytes in hex")
    chip_type = serializers.ChoiceField(choices=ChipType.choices)
    # 1..33 bytes or blank: with {0,33} the schema's oneOf (pattern | "") matched "" twice, i.e. not at all.
    atr = serializers.RegexField(r"^(?:[0-9A-Fa-f]{2}){1,33}$", required=False, default="", allow_blank=True,
                                 help_text="answer to reset in hex, up to 33 bytes; empty if unknown")
    profile = ScopedPkField(CardProfile, action="manage", required=False, allow_null=True)


class CardViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ScopedViewSet):
    serializer_class = CardOutput

    def get_queryset(self):
        return card_list(actor=self.actor, **self.list_filters(CardFilter))

    @extend_schema(parameters=[CardFilter])
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    @extend_schema(request=CardInput, responses={201: CardOutput})
    def create(self, request):
        data = CardInput(data=request.data, context={"request": request})
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        tenant = resolve_tenant(values, self.actor, "manage")
        values.pop("tenant", None)
        card = card_register(actor=self.actor, tenant=tenant, **values)
        return Response(CardOutput(card).data, status=status.HTTP_201_CREATED)


class ApplicationOutput(serializers.ModelSerializer):
    tenant = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    card_uid = serializers.CharField(source="card.uid", read_only=True)

    class Meta:
        model = Application
        fields = ["id", "card", "card_uid", "tenant", "kind", "aid", "key_settings", "key_type", "num_keys",
                  "created_at"]


class ApplicationInput(serializers.Serializer):
    card = ScopedPkField(Card, action="manage")
    kind = serializers.ChoiceField(choices=AppKind.choices)
    aid = serializers.RegexField(r"^(?:[0-9A-Fa-f]{2}){3,16}$",
                                 help_text="DESFire: 3 bytes; GlobalPlatform: 5-16 bytes; hex")
    key_settings = serializers.IntegerField(min_value=0, max_value=0xFF, default=0x0B)
    key_type = serializers.ChoiceField(choices=KeyType.choices, default=KeyType.AES128)
    num_keys = serializers.IntegerField(min_value=1, max_value=14, default=1)


class ApplicationViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ScopedViewSet):
    serializer_class = ApplicationOutput

    def get_queryset(self):
        return application_list(actor=self.actor, **self.list_filters(ApplicationFilter))

    @extend_schema(parameters=[ApplicationFilter])
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    @extend_schema(request=ApplicationInput, responses={201: ApplicationOutput})
    def create(self, request):
        data = ApplicationInput(data=request.data, context={"request": request})
        data.is_valid(raise_exception=True)
        application = application_create(actor=self.actor, **data.validated_data)
        return Response(ApplicationOutput(application).data, status=status.HTTP_201_CREATED)


class CardFileOutput(serializers.ModelSerializer):
    aid = serializers.CharField(source="application.aid", read_only=True)

    class Meta:
        model = CardFile
        fields = ["id", "application", "aid", "file_no", "file_type", "comm_mode", "read_key", "write_key",
                  "read_write_key", "change_key", "size", "options"]


class CardFileInput(serializers.Serializer):
    application = ScopedPkField(Application, action="manage")
    file_no = serializers.IntegerField(min_value=0, max_value=31)
    file_type = serializers.ChoiceField(choices=FileType.choices)
    comm_mode = serializers.ChoiceField(choices=CommMode.choices, default=CommMode.FULL)
    read_key = serializers.IntegerField(min_value=0, max_value=15, help_text="key number, 14 free, 15 never")
    write_key = serializers.IntegerField(min_value=0, max_value=15)
    read_write_key = serializers.IntegerField(min_value=0, max_value=15)
    change_key = serializers.IntegerField(min_value=0, max_value=15)
    size = serializers.IntegerField(min_value=0, max_value=32 * 1024, default=0)
    options = serializers.DictField(required=False, default=dict)


class CardFileViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ScopedViewSet):
    serializer_class = CardFileOutput

    def get_queryset(self):
        filters = self.list_filters(CardFileFilter)
        return card_file_list(actor=self.actor, application_id=filters.get("application"))

    @extend_schema(parameters=[CardFileFilter])
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    @extend_schema(request=CardFileInput, responses={201: CardFileOutput})
    def create(self, request):
        data = CardFileInput(data=request.data, context={"request": request})
        data.is_valid(raise_exception=True)
        card_file = card_file_create(actor=self.actor, **data.validated_data)
        return Response(CardFileOutput(card_file).data, status=status.HTTP_201_CREATED)
