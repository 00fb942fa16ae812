"""What the x2q builder indexes: the triggers seen in a time window, and how popular queries are.

Pure: events in, triggers and counts out. A trigger is keyed exactly as the session worker
records it in a user's recent set (``streams.processor``, :mod:`cache.recent`): a search or a
clicked hint is a ``query`` trigger (its text), a click an ``item`` trigger (its item id) and a
``category`` trigger (the leaf of its category path). So every trigger a reader can look up
was seen as one of these, and the index meets the reader on :func:`cache.recent.trigger_member`.

Each :class:`SeenTrigger` carries the behaviour the Think model is shown for it (what the
session would have put in a prompt for that event: the query, or the item's text surrogate
and category path), how often the window saw it, and when last. :class:`Popularity` counts the
window's searches and clicked hints per query (:func:`cache.text.normalize` form): the
"business signal" half of the builder's score (paper §4, ``effectiveness``).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from aigq.events import ClickEvent, HintClickEvent, SearchEvent
from cache.recent import TriggerKind, trigger_member
from cache.text import normalize
from generators.prompt import Behaviour

DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class SeenTrigger:
    """One distinct trigger of the window."""

    member: str
    """its key, ``<kind>:<normalised text>`` (:func:`cache.recent.trigger_member`)"""
    kind: TriggerKind
    behaviour: Behaviour
    """the newest event that made it, as the prompt's one behaviour ``(ts, kind, text, path)``"""
    count: int
    """events of the window that made it"""
    last_ts: int


@dataclass(frozen=True, slots=True)
class Popularity:
    """How often each query (normalised) was searched or clicked as a hint in the window."""

    counts: Mapping[str, int]

    def effectiveness(self, query: str) -> float:
        """``log1p(count) / log1p(max count)`` in [0, 1]: a query nobody searched gets 0, the
        most searched 1; the log keeps a handful of navigational giants (``google``) from
        flattening everything else to 0."""
        top = max(self.counts.values(), default=0)
        if top <= 0:
            return 0.0
        return math.log1p(self.counts.get(normalize(query), 0)) / math.log1p(top)

    def top(self, n: int) -> list[tuple[str, float]]:
        """The ``n`` most counted queries with their counts (ties: text order), for the
        popular set."""
        ranked = sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
        return [(query, float(count)) for query, count in ranked]


def popularity_of(events: Iterable[object]) -> Popularity:
    """The query popularity of ``events`` whatever their times: searches and clicked hints
    (the window's is :func:`collect`'s)."""
    counts: Counter[str] = Counter()
    for event in events:
        if isinstance(event, SearchEvent | HintClickEvent):
            key = normalize(event.query)
            if key:
                counts[key] += 1
    return Popularity(dict(counts))


def _triggers_of(
    event: SearchEvent | ClickEvent | HintClickEvent,
) -> list[tuple[TriggerKind, str, Behaviour]]:
    if isinstance(event, ClickEvent):
        path = ">".join(event.category)
        behaviour: Behaviour = (event.ts, "click", event.item_text, path)
        out: list[tuple[TriggerKind, str, Behaviour]] = [("item", event.item_id, behaviour)]
        if event.category:
            leaf = event.category[-1]
            out.append(("category", leaf, (event.ts, "click", leaf, path)))
        return out
    kind = "search" if isinstance(event, SearchEvent) else "hint_click"
    return [("query", event.query, (event.ts, kind, event.query, ""))]


def collect(
    events: Iterable[object], since_ms: int, until_ms: int
) -> tuple[list[SeenTrigger], Popularity]:
    """The distinct triggers of the events in ``[since_ms, until_ms)``, most seen first (ties:
    newest first, then key), and the window's query popularity. Other event types and events
    outside the window are skipped."""
    if until_ms <= since_ms:
        raise ValueError(f"empty window: since {since_ms} >= until {until_ms}")
    count: Counter[str] = Counter()
    newest: dict[str, tuple[TriggerKind, Behaviour]] = {}
    popular: Counter[str] = Counter()
    for event in events:
        if not isinstance(event, SearchEvent | ClickEvent | HintClickEvent):
            continue
        if not since_ms <= event.ts < until_ms:
            continue
        if isinstance(event, SearchEvent | HintClickEvent):
            key = normalize(event.query)
            if key:
                popular[key] += 1
        for kind, text, behaviour in _triggers_of(event):
            member = trigger_member(kind, text)
            if not member:
                continue
            count[member] += 1
            held = newest.get(member)
            if held is None or held[1][0] <= behaviour[0]:
                newest[member] = (kind, behaviour)
    seen = [
        SeenTrigger(member, kind, behaviour, count[member], behaviour[0])
        for member, (kind, behaviour) in newest.items()
    ]
    seen.sort(key=lambda t: (-t.count, -t.last_ts, t.member))
    return seen, Popularity(dict(popular))


def window(until_ms: int, days: int) -> tuple[int, int]:
    """``[until - days, until)`` in UTC ms; ``until`` is a day boundary or any time."""
    if days < 1:
        raise ValueError(f"days must be >= 1, got {days}")
    return until_ms - days * DAY_MS, until_ms
