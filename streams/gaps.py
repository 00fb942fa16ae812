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
take offsets), the seeks find the same gap again. After ``max_seeks`` the guard does not take
that for proof: it answers ``VERIFY``, and the worker asks the broker for the first record at
or after the offset due (:func:`streams.peek.first_offsets`). Only a log that has no record
there is a real gap (:meth:`GapGuard.accept`: counted, and reading goes on from that record);
a log that has one means the seeks were overtaken by records fetched before them (a loaded
machine: seen losing 3,301 of 8,200 events in the kill -9 fault scenario when the guard
accepted after three seeks), and the guard starts over with a longer settle time
(:meth:`GapGuard.retry`). ``max_seeks`` 0 turns the guard off (every gap accepted at once).
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
    VERIFY = "verify"  # the seeks found the gap again: ask the broker, drop this record


@dataclass(slots=True)
class _Partition:
    due: int | None  # the next offset to apply; None: not known yet
    seeks: int = 0  # seeks made for this ``due``
    sought_at: float = 0.0  # monotonic time of the last seek
    rounds: int = 0  # times the broker said this gap is not real: the settle time doubles
    verifying: bool = False  # asked the broker; records past ``due`` are dropped meanwhile


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
            part.due, part.seeks, part.rounds, part.verifying = offset + 1, 0, 0, False
            return Verdict.APPLY
        if offset < due:
            return Verdict.BEHIND
        if self.max_seeks == 0:  # the guard is off
            self.accepted += 1
            part.due = offset + 1
            return Verdict.APPLY
        settle = self.settle_s * 2 ** min(part.rounds, 5)
        if part.verifying or (part.seeks and now - part.sought_at < settle):
            self.dropped += 1
            return Verdict.DROP
        self.dropped += 1
        part.sought_at = now
        if part.seeks < self.max_seeks:
            part.seeks += 1
            self.seeks += 1
            return Verdict.SEEK
        part.verifying = True  # the same gap after every seek: the broker says if it is real
        return Verdict.VERIFY

    def accept(self, tp: K, first: int) -> None:
        """The broker has no record of ``tp`` from the offset due up to ``first``: a real gap.
        Reading goes on from ``first`` (the worker seeks there)."""
        part = self._parts.get(tp)
        if part is None or part.due is None or first <= part.due:
            raise ValueError(f"no gap to accept at {tp!r} up to {first}")
        self.accepted += 1
        part.due, part.seeks, part.rounds, part.verifying = first, 0, 0, False

    def retry(self, tp: K, now: float) -> None:
        """The broker holds the record due: the gap is not real. Seek again (the worker does),
        and wait twice as long before the next seek."""
        part = self._parts.get(tp)
        if part is None:
            return
        self.seeks += 1
        part.seeks, part.rounds, part.verifying, part.sought_at = 1, part.rounds + 1, False, now

    def forget(self, tps: Iterable[K] | None = None) -> None:
        """Drop what is known of ``tps`` (all when None): after a rebalance, the consumer
        resumes them from their committed offsets."""
        if tps is None:
            self._parts.clear()
        else:
            for tp in tps:
                self._parts.pop(tp, None)
