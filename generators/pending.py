"""The generator's queue in front of the model: at most one request per user, best first.

Requests are read from Kafka as fast as they come (while the set has room) and kept here, not
in Kafka: a newer request of a user replaces the one pending (the older one is *superseded*
and never costs a model call), and a free generation slot takes the ``n`` best, not the
oldest. Pure: no I/O, no clock of its own, so it is tested with plain values.

**Priority** (``order="priority"``). A request's score is its interest shift (0..1; the
session worker's cosine distance from the last trigger's profile, 1.0 at cold start) plus one
point for each ``aging_s`` seconds it has waited here. A strong shift is served first, and no
request starves: any request outranks a fresh one of any shift once it has waited
``aging_s``. Since every pending request ages at the same rate, the ranking never changes
while they wait, so it is a heap keyed once, at arrival, by ``arrival_s / aging_s - shift``.
``order="fifo"`` serves in arrival order (the generator before this module: the benchmark's
baseline arm).

**Offsets.** :class:`OffsetLedger` knows, per partition, every offset taken and not yet
finished (pending, generating, or its dead letter not yet sent). The offset to commit is the
lowest unfinished one, or one past the highest taken: a request superseded or skipped is
finished at once, so its offset is committed with its neighbours', and a crash redoes only
what was unfinished.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field
from typing import Literal

from aiokafka.structs import TopicPartition

from aigq.events import RegenerationRequest
from generators.requests import Source

Order = Literal["priority", "fifo"]


@dataclass(slots=True)
class Entry:
    """A request waiting for the model, where it came from, and when it arrived here."""

    request: RegenerationRequest
    source: Source
    tp: TopicPartition
    offset: int
    size: int  # its record's bytes (the set is bounded by their sum too)
    arrived_s: float  # monotonic seconds
    received_ms: int = 0  # wall time it was read (UTC ms)
    blocked_ms: float = 0.0  # the generator's blocked time by then (GeneratedQueries)
    key: float = 0.0  # heap key: smaller is served first
    seq: int = 0


@dataclass
class Offered:
    """What :meth:`PendingSet.offer` did: the entry it displaced (now finished), if any, and
    whether the offered one was itself superseded (finished at once)."""

    superseded: Entry | None = None
    displaced: Entry | None = None


@dataclass
class PendingSet:
    """At most one pending request per user, served by priority; see the module doc."""

    order: Order = "priority"
    aging_s: float = 5.0
    max_requests: int = 4096
    max_bytes: int = 64 * 1024 * 1024
    _by_user: dict[str, Entry] = field(default_factory=dict)
    _heap: list[tuple[float, int, Entry]] = field(default_factory=list)
    _seq: itertools.count[int] = field(default_factory=itertools.count)
    bytes: int = 0

    def __post_init__(self) -> None:
        if self.aging_s <= 0 or self.max_requests < 1 or self.max_bytes < 1:
            raise ValueError("aging_s, max_requests and max_bytes must be > 0")

    def __len__(self) -> int:
        return len(self._by_user)

    @property
    def full(self) -> bool:
        return len(self._by_user) >= self.max_requests or self.bytes >= self.max_bytes

    def get(self, user_id: str) -> Entry | None:
        return self._by_user.get(user_id)

    def offer(self, entry: Entry, in_flight: tuple[int, int] | None = None) -> Offered:
        """Add ``entry`` unless an equal or newer request of its user is pending or being
        generated (``in_flight``: the order of the newest one in flight); an older pending one
        is displaced. The entry given back in either field is finished: commit its offset."""
        request = entry.request
        if in_flight is not None and in_flight >= request.order:
            return Offered(superseded=entry)
        held = self._by_user.get(request.user_id)
        if held is not None:
            if held.request.order >= request.order:
                return Offered(superseded=entry)
            self._remove(held)
        entry.seq = next(self._seq)
        if self.order == "fifo":
            entry.key = float(entry.seq)
        else:
            entry.key = entry.arrived_s / self.aging_s - request.shift  # -score
        self._by_user[request.user_id] = entry
        self.bytes += entry.size
        heapq.heappush(self._heap, (entry.key, entry.seq, entry))
        return Offered(displaced=held)

    def take(self, n: int) -> list[Entry]:
        """The ``n`` best pending requests, removed from the set (best first)."""
        out: list[Entry] = []
        heap = self._heap
        while heap and len(out) < n:
            _, _, entry = heapq.heappop(heap)
            if self._by_user.get(entry.request.user_id) is entry:
                del self._by_user[entry.request.user_id]
                self.bytes -= entry.size
                out.append(entry)
        return out

    def drop_partitions(self, tps: set[TopicPartition]) -> list[Entry]:
        """Forget the requests read from ``tps`` (revoked: their new owner reads them again)."""
        gone = [e for e in self._by_user.values() if e.tp in tps]
        for entry in gone:
            self._remove(entry)
        return gone

    def _remove(self, entry: Entry) -> None:
        # Lazily: its heap slot is skipped by take() once the user maps to another entry.
        del self._by_user[entry.request.user_id]
        self.bytes -= entry.size
        if len(self._heap) > 4 * max(len(self._by_user), 64):
            self._heap = [item for item in self._heap if self._by_user.get(
                item[2].request.user_id) is item[2]]  # fmt: skip
            heapq.heapify(self._heap)


@dataclass
class OffsetLedger:
    """Per partition, the offsets taken and not yet finished; see the module doc."""

    _open: dict[TopicPartition, set[int]] = field(default_factory=dict)
    _next: dict[TopicPartition, int] = field(default_factory=dict)  # one past the highest taken
    _committed: dict[TopicPartition, int] = field(default_factory=dict)

    def take(self, tp: TopicPartition, offset: int) -> None:
        self._open.setdefault(tp, set()).add(offset)
        self._next[tp] = max(self._next.get(tp, 0), offset + 1)

    def finish(self, tp: TopicPartition, offset: int) -> None:
        """Finished (written, superseded, skipped, dead-lettered); unknown offsets are ignored
        (their partition was revoked since)."""
        opened = self._open.get(tp)
        if opened is not None:
            opened.discard(offset)

    def next_offset(self, tp: TopicPartition) -> int | None:
        """One past the highest offset taken from ``tp`` (None: nothing taken yet)."""
        return self._next.get(tp)

    def unfinished(self) -> int:
        return sum(len(offsets) for offsets in self._open.values())

    def committable(self) -> dict[TopicPartition, int]:
        """The offset to commit per partition, where it moved since the last call's result
        was marked :meth:`committed`."""
        out: dict[TopicPartition, int] = {}
        for tp, end in self._next.items():
            opened = self._open.get(tp)
            offset = min(opened) if opened else end
            if offset > self._committed.get(tp, -1):
                out[tp] = offset
        return out

    def committed(self, offsets: dict[TopicPartition, int]) -> None:
        for tp, offset in offsets.items():
            if tp in self._next:
                self._committed[tp] = max(self._committed.get(tp, -1), offset)

    def forget(self, tps: set[TopicPartition]) -> None:
        """A revoked partition: what was taken from it is no longer ours to commit."""
        for tp in tps:
            self._open.pop(tp, None)
            self._next.pop(tp, None)
            self._committed.pop(tp, None)


@dataclass
class Throughput:
    """Lists generated per second of *busy* time (at least one batch in flight), over the last
    ``window_s``: what the generator can do, not what it was asked for. ``initial`` until a
    batch has been measured."""

    window_s: float = 10.0
    initial: float = 10.0
    _busy_s: float = 0.0
    _lists: int = 0
    _since: float | None = None  # busy since (monotonic), while a batch is in flight
    _samples: list[tuple[float, float, int]] = field(default_factory=list)  # (t, busy, lists)

    def started(self, now: float) -> None:
        if self._since is None:
            self._since = now

    def finished(self, now: float, lists: int, still_busy: bool) -> None:
        if self._since is not None:
            self._busy_s += now - self._since
            self._since = now if still_busy else None
        self._lists += lists
        self._samples.append((now, self._busy_s, self._lists))
        while len(self._samples) > 2 and self._samples[1][0] < now - self.window_s:
            self._samples.pop(0)

    def rate(self) -> float:
        if len(self._samples) < 2:
            first = self._samples[0] if self._samples else None
            if first is None or first[1] <= 0:
                return self.initial
            return first[2] / first[1]
        (_, busy0, lists0), (_, busy1, lists1) = self._samples[0], self._samples[-1]
        if busy1 - busy0 <= 0:
            return self.initial
        return (lists1 - lists0) / (busy1 - busy0)
