"""The one exception root of aigq-nearline.

Every error the project raises derives from :class:`AigqError`; each subpackage adds its own
subclasses here or in its own ``errors`` module. Third-party errors are translated at the
boundary with ``raise ... from exc`` so callers only ever catch ours.
"""

from __future__ import annotations


class AigqError(Exception):
    """Root of every error raised by aigq-nearline."""


class ConfigError(AigqError):
    """Settings are missing, contradictory or malformed."""


class EventError(AigqError):
    """An event could not be decoded or validated.

    ``field`` names the offending field as a dotted path (``shown.1.position``), or ``"<root>"``
    when the payload itself is unusable (not JSON, not an object, too large).
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class DatasetError(AigqError):
    """A dataset source cannot be opened or read at all (one bad line is not an error)."""


class ServiceError(AigqError):
    """A backing service (Kafka broker, Redis) is unreachable or refused a request."""


class DevStackError(AigqError):
    """The local development stack could not be started, inspected or stopped."""


class RegistryError(AigqError, ValueError):
    """A model the registry cannot resolve, publish or read (aigq.registry)."""
