"""What every dataset adapter yields, and the one merge that orders many users into one stream."""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TypeAlias

from pydantic import ValidationError

from aigq.events import Event

MAX_SAMPLES = 20


@dataclass(frozen=True, slots=True)
class Malformed:
    """A source line that gave no event: where it was, its raw text, and why."""

    origin: str
    raw: str
    reason: str
    ts: int = 0  # the user's last good timestamp, so merging keeps it near its neighbours


SourceItem: TypeAlias = Event | Malformed


@dataclass(slots=True)
class SourceStats:
    """Counts of what a source gave; keeps the first few malformed lines as examples."""

    events: int = 0
    malformed: int = 0
    samples: list[Malformed] = field(default_factory=list)

    def count(self, item: SourceItem) -> None:
        if isinstance(item, Malformed):
            self.malformed += 1
            if len(self.samples) < MAX_SAMPLES:
                self.samples.append(item)
        else:
            self.events += 1


def reason_of(exc: ValidationError) -> str:
    """One short line out of a pydantic error: ``field: message``."""
    first = exc.errors(include_url=False)[0]
    where = ".".join(str(p) for p in first["loc"]) or "<root>"
    return f"{where}: {first['msg'].removeprefix('Value error, ')}"


def merge_by_time(streams: Iterable[Iterable[SourceItem]]) -> Iterator[SourceItem]:
    """Interleave per-user streams by timestamp.

    Each input keeps its own order (heapq.merge only ever advances one input at a time), so a
    user's events come out exactly as that user's stream gave them; ties go to the earlier
    input.
    """
    return heapq.merge(*streams, key=_ts)


def _ts(item: SourceItem) -> int:
    return item.ts
