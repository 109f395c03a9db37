"""What every card-side API view shares: scoping, JSON-only input, typed errors, documented error codes."""
from __future__ import annotations

import re

from django.db.models import Model
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import exceptions, serializers, viewsets
from rest_framework.fields import empty

from cards.models import Tenant
from cards.profiles import ProfileSpecError
from cards.services.orders import IdempotencyConflict
from cms.api import Conflict, JsonParser, StrictLimitOffsetPagination
from cms.scoping import restrict, tenant_ids

MAX_PK = 2**63 - 1  # the largest bigint: a larger id cannot exist, and the database refuses it
_ERROR = {"type": "object", "additionalProperties": True,
          "description": "`detail`, or field names (JSON paths for profile specs) mapped to messages"}
_ERROR_CODES = {
    "400": "The input is invalid; the body names each field and why",
    "401": "No valid credentials (API token or session)",
    "403": "Authenticated, but not allowed to do this",
    "404": "No such object among those the caller may see",
    "409": "Conflicts with the current state (e.g. an Idempotency-Key reused with another body)",
    "413": "The body is larger than the server reads (DATA_UPLOAD_MAX_MEMORY_SIZE)",
    "415": "The body is not JSON",
    "503": "A backing service (Vault) is unavailable; nothing was changed",
}


class CmsAutoSchema(AutoSchema):
    """Documents the error answers every view can give, so clients (and schemathesis) expect them."""

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        for code, description in _ERROR_CODES.items():
            responses.setdefault(code, {"description": description,
                                        "content": {"application/json": {"schema": _ERROR}}})
        return responses


class ApiTokenScheme(OpenApiAuthenticationExtension):
    target_class = "cms.authentication.ApiTokenAuthentication"
    name = "apiToken"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer",
                "description": "a service account's API token: `Authorization: Bearer cms_<prefix>_<secret>`"}


class Pagination(StrictLimitOffsetPagination):
    max_limit = 500


class ScopedViewSet(viewsets.GenericViewSet):
    """Querysets come from selectors (scoped); writes call one service each."""

    schema = CmsAutoSchema()
    parser_classes = [JsonParser]  # JSON only; too deep: 400
    pagination_class = Pagination

    @property
    def actor(self):
        return self.request.user

    def list_filters(self, filters: type[serializers.Serializer]) -> dict:
        """The list's query-string filters, validated (a bad one is a 400 naming it); {} for other actions."""
        if self.action != "list":
            return {}
        # A plain dict (the last value of each): as a QueryDict, DRF would read `?state=` as "not given".
        data = filters(data=self.request.query_params.dict())
        data.is_valid(raise_exception=True)
        return data.validated_data

    def get_object(self):
        lookup = self.kwargs.get(self.lookup_url_kwarg or self.lookup_field, "")
        if self.lookup_field == "pk" and not _is_pk(lookup):
            raise exceptions.NotFound()
        return super().get_object()

    def handle_exception(self, exc):
        if isinstance(exc, ProfileSpecError):
            exc = exceptions.ValidationError({"spec": exc.errors})
        elif isinstance(exc, IdempotencyConflict):
            exc = Conflict(str(exc))
        return super().handle_exception(exc)


def _is_pk(value) -> bool:
    text = str(value)
    return text.isdigit() and text.isascii() and 0 < int(text) <= MAX_PK


@extend_schema_field(OpenApiTypes.INT)
class ScopedPkField(serializers.RelatedField):
    """A reference by id to an object the caller may `action`; others are "does not exist" (no leak)."""

    default_error_messages = {"does_not_exist": "no such object", "incorrect_type": "must be an integer id"}

    def __init__(self, model: type[Model], action: str = "view", **kwargs):
        self.model, self.action = model, action
        kwargs.setdefault("queryset", model._default_manager.all())
        super().__init__(**kwargs)

    def get_queryset(self):
        return restrict(self.model._default_manager.all(), self.context["request"].user, self.action)

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int | str) or not _is_pk(data):
            self.fail("incorrect_type")
        obj = self.get_queryset().filter(pk=int(data)).first()
        if obj is None:
            self.fail("does_not_exist")
        return obj

    def to_representation(self, value):
        return value.pk


UID_PATTERN = r"^(?:[0-9A-Fa-f]{8}|[0-9A-Fa-f]{14}|[0-9A-Fa-f]{20})$"
AID_PATTERN = r"^(?:[0-9A-Fa-f]{2}){3,16}$"


def uid_filter(**kwargs) -> serializers.RegexField:
    return serializers.RegexField(UID_PATTERN, required=False, help_text="4, 7 or 10 bytes in hex", **kwargs)


def id_filter(**kwargs) -> serializers.IntegerField:
    return serializers.IntegerField(min_value=1, max_value=MAX_PK, required=False, **kwargs)


class QueryBooleanField(serializers.BooleanField):
    """`true` or `false` in a query string. Absent stays absent (DRF reads a missing form box as False)."""

    default_empty_html = empty

    def to_internal_value(self, data):
        text = data.lower() if isinstance(data, str) else data
        if text in ("true", "false"):
            return text == "true"
        self.fail("invalid", input=data)


_SLUG = re.compile(r"[-a-zA-Z0-9_]{1,50}")


class TenantField(serializers.SlugRelatedField):
    """A tenant by slug, among those where the caller may `action`."""

    def __init__(self, action: str = "manage", **kwargs):
        self.action = action
        kwargs.setdefault("queryset", Tenant.objects.all())
        super().__init__(slug_field="slug", **kwargs)

    def get_queryset(self):
        return restrict(Tenant.objects.all(), self.context["request"].user, self.action)

    def to_internal_value(self, data):
        # Only slug-shaped strings reach the query: PostgreSQL refuses a NUL byte with a server error.
        if not isinstance(data, str) or not _SLUG.fullmatch(data):
            self.fail("invalid")
        return super().to_internal_value(data)


def resolve_tenant(attrs: dict, actor, action: str) -> Tenant:
    """The tenant named in the input, or the caller's only tenant for `action` when none is named."""
    tenant = attrs.get("tenant")
    if tenant is not None:
        return tenant
    allowed = tenant_ids(actor, action)
    if allowed == []:
        raise exceptions.PermissionDenied(f"not allowed to {action} in any tenant")
    if allowed is not None and len(allowed) == 1:
        return Tenant.objects.get(pk=allowed[0])
    raise exceptions.ValidationError({"tenant": ["this field is required (the caller acts for several "
                                                 "tenants, or none)"]})
