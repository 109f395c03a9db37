"""DRF authentication for MES service accounts: `Authorization: Bearer cms_<prefix>_<secret>`.

The token is looked up by its public prefix and compared as an HMAC digest in constant
time; the plain token is never stored.
"""
from __future__ import annotations

from django.utils import timezone
from rest_framework import authentication, exceptions

from cms.models import TOKEN_PREFIX_LEN, ApiToken


class ApiTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        parts = header.split()
        if len(parts) != 2 or parts[0] != self.keyword:
            return None
        plain = parts[1]
        pieces = plain.split("_", 2)
        if len(pieces) != 3 or pieces[0] != "cms" or len(pieces[1]) != TOKEN_PREFIX_LEN:
            raise exceptions.AuthenticationFailed("malformed API token")
        token = ApiToken.objects.select_related("account", "account__tenant").filter(prefix=pieces[1]).first()
        if token is None or not token.matches(plain) or not token.usable:
            raise exceptions.AuthenticationFailed("invalid, expired or revoked API token")
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=timezone.now())
        return token.account, token

    def authenticate_header(self, request) -> str:
        return self.keyword
