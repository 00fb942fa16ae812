"""Dataset adapters: real logs and a synthetic generator turned into ordered event streams.

Every adapter yields :data:`SourceItem` values (an event, or a :class:`Malformed` record for a
line it could not use) ordered by timestamp, each user's events in that user's own order.
"""

from aigq.datasets.base import Malformed, SourceItem, SourceStats

__all__ = ["Malformed", "SourceItem", "SourceStats"]
