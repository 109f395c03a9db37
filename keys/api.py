"""Key metadata over the API, read only: slots, versions, master keys; never a vault_ref or a wrapped key."""
from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers

from cards.api.base import AID_PATTERN, ScopedViewSet, id_filter, uid_filter
from keys.models import KeySlot, KeyVersion, MasterKey, MasterKeyVersion, VersionState
from keys.selectors import key_slot_list, key_version_list, master_key_list

# Only these fields ever leave: a new field on a key model stays private until it is added here.
VERSION_FIELDS = ["id", "number", "state", "policy", "kcv", "created_at", "activated_at", "retired_at",
                  "grace_until", "destroyed_at"]


class KeyVersionOutput(serializers.ModelSerializer):
    master = serializers.CharField(source="master_version.master.name", read_only=True, default=None,
                                   allow_null=True)
    master_version = serializers.IntegerField(source="master_version.number", read_only=True, default=None,
                                              allow_null=True)

    class Meta:
        model = KeyVersion
        fields = [*VERSION_FIELDS, "slot", "master", "master_version"]


class KeySlotOutput(serializers.ModelSerializer):
    tenant = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    card_uid = serializers.CharField(source="card.uid", read_only=True)
    aid = serializers.CharField(source="application.aid", read_only=True, default=None, allow_null=True)
    master = serializers.SlugRelatedField(slug_field="name", read_only=True, allow_null=True)
    versions = KeyVersionOutput(many=True, read_only=True)

    class Meta:
        model = KeySlot
        fields = ["id", "tenant", "card", "card_uid", "application", "aid", "role", "key_no", "policy",
                  "master", "label", "versions"]


class MasterKeyVersionOutput(serializers.ModelSerializer):
    class Meta:
        model = MasterKeyVersion
        fields = ["id", "number", "state", "kcv", "created_at", "activated_at", "retired_at", "destroyed_at"]


class MasterKeyOutput(serializers.ModelSerializer):
    tenant = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    versions = MasterKeyVersionOutput(many=True, read_only=True)

    class Meta:
        model = MasterKey
        fields = ["id", "tenant", "name", "method", "created_at", "versions"]


class KeySlotFilter(serializers.Serializer):
    card_uid = uid_filter()
    aid = serializers.RegexField(AID_PATTERN, required=False, help_text="3-16 bytes in hex")


class KeyVersionFilter(serializers.Serializer):
    slot = id_filter(source="slot_id")
    state = serializers.ChoiceField(choices=VersionState.choices, required=False)


class KeySlotViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ScopedViewSet):
    serializer_class = KeySlotOutput

    def get_queryset(self):
        return key_slot_list(actor=self.actor, **self.list_filters(KeySlotFilter))

    @extend_schema(parameters=[KeySlotFilter])
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)


class KeyVersionViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ScopedViewSet):
    serializer_class = KeyVersionOutput

    def get_queryset(self):
        return key_version_list(actor=self.actor, **self.list_filters(KeyVersionFilter))

    @extend_schema(parameters=[KeyVersionFilter])
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)


class MasterKeyViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ScopedViewSet):
    serializer_class = MasterKeyOutput

    def get_queryset(self):
        return master_key_list(actor=self.actor)


def register(router) -> None:
    router.register("key-slots", KeySlotViewSet, basename="key-slot")
    router.register("key-versions", KeyVersionViewSet, basename="key-version")
    router.register("master-keys", MasterKeyViewSet, basename="master-key")
