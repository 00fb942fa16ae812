"""The one composition rule of the read path: u2q run + x2q lists + popular -> k hints.

Pure: plain values in, a list out; :class:`cache.hints.HintClient` (and through it the HTTP
API) is its only caller on the read path.

Order (each query at most once, by :func:`cache.text.normalize`, so "Running  Shoes" and
"running shoes" are one hint; the first spelling seen is kept):

1. the x2q queries of triggers **newer** than the u2q run's event time (all triggers, when
   there is no run), interleaved one for one with the u2q run's queries, x2q first: they are
   what the run has not seen (paper §4), but one fresh click should not push every u2q query
   out of the list;
2. the rest of whichever of the two is longer;
3. the x2q queries of triggers the run has already seen;
4. only when all of that is empty: the popular queries (the fallback).

Several x2q lists are merged round-robin, newest trigger first, so each trigger contributes
its best query before any contributes its second.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import zip_longest
from typing import Literal, NamedTuple

from cache.recent import Trigger
from cache.text import normalize_cached
from cache.u2q import U2QRun

Source = Literal["u2q", "x2q", "popular"]


class Hint(NamedTuple):
    """One hint query and where it came from (for x2q: the trigger key that found it)."""

    query: str
    source: Source
    trigger: str | None = None


class TriggerHits(NamedTuple):
    """One recent trigger and the x2q queries it looked up (possibly none)."""

    trigger: Trigger
    queries: Sequence[str]


def _round_robin(lists: Sequence[TriggerHits], k: int) -> list[tuple[str, str]]:
    """``(query, trigger key)`` pairs: every list's first, then every list's second, ...

    No list can give more than ``k`` hints, so each is read that far at most.
    """
    if len(lists) == 1:  # the common case, without the transposition
        member = lists[0].trigger.member
        return [(query, member) for query in lists[0].queries[:k]]
    members = [hits.trigger.member for hits in lists]
    merged = []
    for row in zip_longest(*(hits.queries[:k] for hits in lists)):
        for query, member in zip(row, members, strict=True):
            if query is not None:
                merged.append((query, member))
    return merged


def compose(
    u2q: U2QRun | None,
    x2q: Sequence[TriggerHits],
    popular: Sequence[str],
    k: int,
) -> list[Hint]:
    """At most ``k`` deduplicated hints in the order the module docstring gives.

    ``x2q`` is newest trigger first (as :class:`cache.recent.RecentTriggers` returns them).
    """
    out: list[Hint] = []
    if k < 1:
        return out
    keys: set[str] = set()

    def take(query: str, source: Source, trigger: str | None) -> bool:
        """Keep the query unless it is blank or a near-duplicate; True once ``k`` are kept."""
        key = normalize_cached(query)
        if key and key not in keys:
            keys.add(key)
            out.append(Hint(query.strip(), source, trigger))
        return len(out) >= k

    fresh: Sequence[TriggerHits] = x2q
    seen: Sequence[TriggerHits] = ()
    runs: Sequence[str] = ()
    if u2q is not None:
        fresh = [hits for hits in x2q if hits.trigger.ts > u2q.event_ts]
        seen = [hits for hits in x2q if hits.trigger.ts <= u2q.event_ts]
        runs = u2q.queries
    first = _round_robin(fresh, k) if fresh else []
    for i in range(max(len(first), len(runs))):
        if i < len(first) and take(first[i][0], "x2q", first[i][1]):
            return out
        if i < len(runs) and take(runs[i], "u2q", None):
            return out
    if seen:
        for query, member in _round_robin(seen, k):
            if take(query, "x2q", member):
                return out
    if not out:
        for query in popular:
            if take(query, "popular", None):
                break
    return out
