"""Errors shared by several CMS apps (kept here so that audit need not import keys)."""


class KeystoreError(Exception):
    """A key operation failed. Messages never carry key material."""


class KeystoreUnavailable(KeystoreError):
    """Vault is sealed, unreachable or refuses us: key operations fail closed (API 503)."""
