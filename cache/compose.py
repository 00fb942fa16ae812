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

from collections.abc import Iterable, Iterator, Sequence
from itertools import zip_longest
from typing import Literal, NamedTuple

from cache.recent import Trigger
from cache.text import normalize
from cache.u2q import U2QRun

Source = Literal["u2q", "x2q", "popular"]

# (query, source, trigger key or None): a candidate, made into a Hint only if it is kept
_Candidate = tuple[str, Source, str | None]


class Hint(NamedTuple):
    """One hint query and where it came from (for x2q: the trigger key that found it)."""

    query: str
    source: Source
    trigger: str | None = None


class TriggerHits(NamedTuple):
    """One recent trigger and the x2q queries it looked up (possibly none)."""

    trigger: Trigger
    queries: Sequence[str]


def _round_robin(lists: Sequence[TriggerHits]) -> Iterator[_Candidate]:
    if len(lists) == 1:  # the common case, without the transposition
        member = lists[0].trigger.member
        for query in lists[0].queries:
            yield query, "x2q", member
        return
    members = [hits.trigger.member for hits in lists]
    for row in zip_longest(*(hits.queries for hits in lists)):
        for query, member in zip(row, members, strict=True):
            if query is not None:
                yield query, "x2q", member


def _alternate(first: Iterator[_Candidate], second: Iterable[_Candidate]) -> Iterator[_Candidate]:
    for a, b in zip_longest(first, second):
        if a is not None:
            yield a
        if b is not None:
            yield b


def compose(
    u2q: U2QRun | None,
    x2q: Sequence[TriggerHits],
    popular: Sequence[str],
    k: int,
) -> list[Hint]:
    """At most ``k`` deduplicated hints in the order the module docstring gives.

    ``x2q`` is newest trigger first (as :class:`cache.recent.RecentTriggers` returns them).
    """
    if k < 1:
        return []
    fresh: Sequence[TriggerHits] = x2q
    seen: Sequence[TriggerHits] = ()
    if u2q is not None:
        fresh = [hits for hits in x2q if hits.trigger.ts > u2q.event_ts]
        seen = [hits for hits in x2q if hits.trigger.ts <= u2q.event_ts]
    runs: list[_Candidate] = [(q, "u2q", None) for q in u2q.queries] if u2q else []
    first = _alternate(_round_robin(fresh), runs) if fresh else iter(runs)

    out: list[Hint] = []
    keys: set[str] = set()
    for candidates in (first, _round_robin(seen)):
        for query, source, trigger in candidates:
            key = normalize(query)
            if key and key not in keys:
                keys.add(key)
                out.append(Hint(query.strip(), source, trigger))
                if len(out) >= k:
                    return out
    if not out:
        for query in popular:
            key = normalize(query)
            if key and key not in keys:
                keys.add(key)
                out.append(Hint(query.strip(), "popular"))
                if len(out) >= k:
                    break
    return out
