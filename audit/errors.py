"""Audit errors: the log fails closed, so these abort the caller's transaction."""


class AuditError(Exception):
    """The audit event could not be written; the surrounding change must not commit."""


class AuditUnavailable(AuditError):
    """The chain key cannot be read from Vault (unreachable, sealed, refused)."""


class AuditDetailsError(AuditError, ValueError):
    """The details cannot be stored as JSON (a value of a type we refuse to guess at)."""
