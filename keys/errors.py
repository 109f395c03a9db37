"""Keystore errors. Messages never carry key material."""

from cms.errors import KeystoreError, KeystoreUnavailable

__all__ = ["KeyStateError", "KeystoreError", "KeystoreUnavailable"]


class KeyStateError(KeystoreError):
    """The key version is in the wrong state for this operation (e.g. destroying an active key)."""
