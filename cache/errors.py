"""Errors of the u2q/x2q cache.

Both derive from :class:`~aigq.errors.ServiceError`, so a caller that only cares whether the
cache did its job catches that one class; Redis' own exceptions never leave :mod:`cache`.
"""

from __future__ import annotations

from aigq.errors import AigqError, ServiceError


class CacheError(ServiceError):
    """Redis is unreachable, timed out or refused a cache command."""


class CorruptEntryError(CacheError):
    """A stored cache entry does not decode into what this version of the code wrote."""


class CacheTimeoutError(CacheError):
    """A read did not finish within its deadline (Redis slow, hung or unreachable)."""


class InvalidRequestError(AigqError):
    """The caller asked for something malformed (a bad user id, k below 1)."""
