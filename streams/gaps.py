"""The gap guard: each source partition's records are applied in offset order, none skipped.

The session state is exact only if every record reaches the processor, in order per partition.
Faust (faust-streaming 0.15) can fail that right after a rebalance. Seen here: a restarted
worker began a partition one record past the group's committed offset, about once in fifteen
restarts (the restart test's user short by one search), with no "dropped" or "skipping" line
in Faust's debug log. Its recovery resumes the source partitions, then seeks them to the
committed offsets while the fetcher already runs; where exactly the record goes is not pinned
down, so the guard checks the outcome instead of patching a cause.

:class:`GapGuard` knows the next offset due on each partition: the committed offset after an
assignment, then the last applied offset + 1. A record past it means records were skipped: the
guard asks for a seek back to the offset due and drops (does not apply, does not ack) what
arrives past it until that offset comes. A record below it is ``BEHIND``: the position went
back without a rebalance, which is a re-delivery or a log that was reset; the worker tells
which (:mod:`streams.resets`), forgets the partition here and asks again.

Where a gap is real (a compacted source topic, or a transactional producer's commit markers, which
take offsets), the seeks find the same gap again; after ``max_seeks`` the guard accepts it and
moves on, counting it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)  # a partition: Faust's TP, or anything hashable in tests


class Verdict(enum.Enum):
    APPLY = "apply"
    DROP = "drop"  # past a gap being repaired: do not apply, do not ack
    SEEK = "seek"  # a new gap: seek back to :meth:`GapGuard.due` and drop this record
    BEHIND = "behind"  # below the offset due: the position went back (see the module doc)


@dataclass(slots=True)
class _Partition:
    due: int | None  # the next offset to apply; None: not known yet
    seeks: int = 0  # seeks made for this ``due``
    sought_at: float = 0.0  # monotonic time of the last seek


class GapGuard(Generic[K]):
    """Per-partition offset order, repaired by seeking back (see the module doc).

    ``committed(tp)`` gives the offset the consumer resumed a partition from (None when it has
    none, e.g. a new group reading from the start). ``settle_s``: after a seek, records past
    the offset due are taken for ones fetched before the seek, and dropped without a new seek,
    for this long.
    """

    def __init__(
        self,
        committed: Callable[[K], int | None],
        max_seeks: int = 3,
        settle_s: float = 1.0,
    ) -> None:
        if max_seeks < 0 or settle_s < 0:
            raise ValueError("max_seeks and settle_s must be >= 0")
        self._committed = committed
        self.max_seeks = max_seeks
        self.settle_s = settle_s
        self._parts: dict[K, _Partition] = {}
        self.seeks = 0  # seeks asked for
        self.dropped = 0  # records dropped past a gap
        self.accepted = 0  # gaps accepted as real after max_seeks

    def due(self, tp: K) -> int | None:
        part = self._parts.get(tp)
        return part.due if part is not None else None

    def check(self, tp: K, offset: int, now: float) -> Verdict:
        part = self._parts.get(tp)
        if part is None:
            part = self._parts[tp] = _Partition(self._committed(tp))
        due = part.due
        if due is None or offset == due:
            part.due, part.seeks = offset + 1, 0
            return Verdict.APPLY
        if offset < due:
            return Verdict.BEHIND
        if part.seeks and now - part.sought_at < self.settle_s:
            self.dropped += 1
            return Verdict.DROP
        if part.seeks < self.max_seeks:
            part.seeks += 1
            part.sought_at = now
            self.seeks += 1
            self.dropped += 1
            return Verdict.SEEK
        self.accepted += 1  # the same gap after every seek: it is real
        part.due, part.seeks = offset + 1, 0
        return Verdict.APPLY

    def forget(self, tps: Iterable[K] | None = None) -> None:
        """Drop what is known of ``tps`` (all when None): after a rebalance, the consumer
        resumes them from their committed offsets."""
        if tps is None:
            self._parts.clear()
        else:
            for tp in tps:
                self._parts.pop(tp, None)
