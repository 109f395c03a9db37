"""Django admin (superusers) for key metadata: read only, and never a vault_ref."""
from __future__ import annotations

from django.contrib import admin

from cms.admin import ReadOnlyAdmin
from keys.models import KeySlot, KeyVersion, MasterKey, MasterKeyVersion


@admin.register(MasterKey)
class MasterKeyAdmin(ReadOnlyAdmin):
    list_display = ["name", "tenant", "method", "created_at"]
    list_filter = ["method", "tenant"]
    search_fields = ["name"]


@admin.register(MasterKeyVersion)
class MasterKeyVersionAdmin(ReadOnlyAdmin):
    list_display = ["master", "number", "state", "kcv", "created_at", "activated_at", "retired_at"]
    list_filter = ["state"]
    exclude = ["vault_ref"]


@admin.register(KeySlot)
class KeySlotAdmin(ReadOnlyAdmin):
    list_display = ["__str__", "tenant", "card", "role", "key_no", "policy", "master"]
    list_filter = ["role", "policy", "tenant"]
    search_fields = ["card__uid", "application__aid", "label"]


@admin.register(KeyVersion)
class KeyVersionAdmin(ReadOnlyAdmin):
    list_display = ["slot", "number", "state", "policy", "kcv", "activated_at", "grace_until"]
    list_filter = ["state", "policy"]
    search_fields = ["slot__card__uid"]
    exclude = ["vault_ref"]
