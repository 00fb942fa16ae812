"""The one composition rule of the read path: history + u2q run + x2q lists + popular -> k hints.

Pure: plain values in, a list out; :class:`cache.hints.HintClient` (and through it the HTTP
API) is its only caller on the read path.

Order (each query at most once, by :func:`cache.text.normalize`, so "Running  Shoes" and
"running shoes" are one hint; the first spelling seen is kept):

1. the user's own history (:mod:`cache.history`: strongest first), as many
   as the caller passes (the read API: ``AIGQ_HINTS_HISTORY``, 10). Measured on held-out AOL
   users (:mod:`training.history_rules`, ``aigq bench history``: any-hit@10 on each user's
   last search day), history first beat every other placement tried (top-1/3/5 first,
   interleaved 1:1 or 1:2, after the generated list): 0.336 against 0.316 for the best
   interleave and 0.109 without history, with a co-occurrence u2q stand-in; a caller that
   wants room for generated queries passes fewer;
2. the x2q queries of triggers **newer** than the u2q run's event time (all triggers, when
   there is no run), interleaved one for one with the u2q run's queries, x2q first: they are
   what the run has not seen (paper §4), but one fresh click should not push every u2q query
   out of the list;
3. the rest of whichever of the two is longer;
4. the x2q queries of triggers the run has already seen;
5. the popular queries: the whole list when all of that is empty (the fallback), and the rest
   of a list that x2q alone began (no history, no u2q run: a user whose fresh triggers are
   indexed but whose list was never generated), so that user still gets ``k`` hints. A list
   with history or a u2q run is never padded with popular queries.

Several x2q lists are merged round-robin, newest trigger first, so each trigger contributes
its best query before any contributes its second.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from itertools import chain, zip_longest
from typing import Literal, NamedTuple

from cache.recent import Trigger
from cache.text import normalize_cached
from cache.u2q import U2QRun

Source = Literal["history", "u2q", "x2q", "popular"]


class Hint(NamedTuple):
    """One hint query and where it came from (for x2q: the trigger key that found it)."""

    query: str
    source: Source
    trigger: str | None = None


class TriggerHits(NamedTuple):
    """One recent trigger and the x2q queries it looked up (possibly none)."""

    trigger: Trigger
    queries: Sequence[str]


def _round_robin(lists: Sequence[TriggerHits], k: int) -> Iterator[tuple[str, Source, str]]:
    """``(query, "x2q", trigger key)``: every list's first, then every list's second, ...

    Lazy: composition usually stops after a few. No list can give more than ``k`` hints, so
    each is read that far at most.
    """
    if len(lists) == 1:  # the common case, without the transposition
        member = lists[0].trigger.member
        for query in lists[0].queries[:k]:
            yield query, "x2q", member
        return
    members = [hits.trigger.member for hits in lists]
    for row in zip_longest(*(hits.queries[:k] for hits in lists)):
        for query, member in zip(row, members, strict=True):
            if query is not None:
                yield query, "x2q", member


def _interleave(
    first: Iterator[tuple[str, Source, str]], runs: Sequence[str]
) -> Iterator[tuple[str, Source, str | None]]:
    """One of ``first``, one of ``runs``, ...; then the rest of whichever is longer."""
    for query in runs:
        fresh = next(first, None)
        if fresh is not None:
            yield fresh
        yield query, "u2q", None
    yield from first


def compose(
    u2q: U2QRun | None,
    x2q: Sequence[TriggerHits],
    popular: Sequence[str],
    k: int,
    history: Sequence[str] = (),
) -> list[Hint]:
    """At most ``k`` deduplicated hints in the order the module docstring gives.

    ``x2q`` is newest trigger first (as :class:`cache.recent.RecentTriggers` returns them);
    ``history`` is the user's own past queries, most relevant first
    (:func:`cache.history.top_queries`); leaving it out composes as before it existed.
    """
    if k < 1:
        return []
    if u2q is None:
        candidates: Iterator[tuple[str, Source, str | None]] = _round_robin(x2q, k)
    else:
        event_ts = u2q.event_ts
        fresh = [hits for hits in x2q if hits.trigger.ts > event_ts]
        seen = [hits for hits in x2q if hits.trigger.ts <= event_ts]
        candidates = _interleave(_round_robin(fresh, k), u2q.queries)
        if seen:
            candidates = chain(candidates, _round_robin(seen, k))
    if history:
        candidates = chain(((query, "history", None) for query in history), candidates)
    populars: Iterator[tuple[str, Source, str | None]] = (
        (query, "popular", None) for query in popular
    )
    if not history and (u2q is None or not u2q.queries):  # x2q alone: top it up (rule 5)
        candidates = chain(candidates, populars)
    out = _take(candidates, k)
    if not out:
        out = _take(populars, k)
    return out


def _take(candidates: Iterable[tuple[str, Source, str | None]], k: int) -> list[Hint]:
    """The first ``k`` candidates that are not blank and not near-duplicates of earlier ones."""
    out: list[Hint] = []
    keys: set[str] = set()
    for query, source, trigger in candidates:
        key = normalize_cached(query)
        if key and key not in keys:
            keys.add(key)
            out.append(Hint(query.strip(), source, trigger))
            if len(out) >= k:
                break
    return out
