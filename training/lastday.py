"""The last-day protocol: how the hints are used, one held-out user at a time.

A hint list is read when a user comes back to search. So for each held-out user the test day
is the last UTC calendar day (of the log's own timestamps) on which they searched; the context
is every event before that day (folded into the worker's session state, so the model gets the
prompt ``aigq generate`` would build); the labels are the distinct normalised queries
(:func:`training.samples.query_key`) the user searched that day, strongest interest first.

Besides the context, a :class:`DaySample` carries what the read API would hold for the user
at the start of the test day: the recent-trigger set the session worker records
(:func:`recorded_triggers`, the rule of ``streams.processor`` and :mod:`cache.recent`) and the
queries the user searched before (for novel-hit).

Pure: events in, samples out. :mod:`training.daymetrics` scores lists against them.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from aigq.datasets.base import SourceItem
from aigq.events import ClickEvent, HintClickEvent, SearchEvent
from cache.recent import Trigger, parse_member, trigger_member
from training.samples import (
    DAY_MS,
    AnyEvent,
    Context,
    SampleConfig,
    _proxy,
    group_by_user,
    query_key,
)

RECENT_KEEP = 10
"""triggers a user's recent set keeps (``cache.recent.RecentTriggers``' default, the worker's)"""
RECENT_TTL_MS = 7 * DAY_MS
"""a recent-trigger set expires this long after its last write (``RecentTriggers``' default)"""


@dataclass(frozen=True, slots=True)
class DaySample:
    """One held-out user at the start of their last search day."""

    context: Context
    """the user's state before ``day_ms`` (its ``cut_ms``)"""
    day_ms: int
    """UTC midnight starting the test day: the cut, and the moment the hints are read"""
    labels: tuple[str, ...]
    """the day's distinct normalised queries, strongest interest first"""
    past: frozenset[str]
    """every normalised query the user searched before the test day"""
    triggers: tuple[Trigger, ...]
    """the user's recent-trigger set at the cut, newest first (empty once it expired)"""

    @property
    def user_id(self) -> str:
        return self.context.user_id

    @property
    def novel(self) -> tuple[str, ...]:
        """The labels the user never searched before the test day."""
        return tuple(label for label in self.labels if label not in self.past)


def recorded_triggers(
    events: Iterable[AnyEvent], now_ms: int, keep: int = RECENT_KEEP, ttl_ms: int = RECENT_TTL_MS
) -> tuple[Trigger, ...]:
    """The recent-trigger set the session worker would hold for these events at ``now_ms``.

    As ``streams.processor`` records them: a search or hint click is a ``query`` trigger, a
    click an ``item`` trigger (its item id) and a ``category`` trigger (its leaf category); a
    trigger keeps its newest time; the set keeps the ``keep`` newest (ties: as Redis orders
    them, the greater member first) and expires ``ttl_ms`` after its last write (the last
    event). Newest first, as :meth:`cache.recent.RecentTriggers.latest` returns them.
    """
    newest: dict[str, int] = {}
    last = None
    for event in events:
        if event.ts >= now_ms:
            continue
        members: list[str] = []
        if isinstance(event, SearchEvent | HintClickEvent):
            members.append(trigger_member("query", event.query))
        elif isinstance(event, ClickEvent):
            members.append(trigger_member("item", event.item_id))
            if event.category:
                members.append(trigger_member("category", event.category[-1]))
        else:
            continue
        last = event.ts if last is None else max(last, event.ts)
        for member in members:
            if member and newest.get(member, -1) < event.ts:
                newest[member] = event.ts
    if last is None or now_ms - last >= ttl_ms:
        return ()
    ranked = sorted(newest.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)[:keep]
    parsed = (parse_member(member, ts) for member, ts in ranked)
    return tuple(trigger for trigger in parsed if trigger is not None)


def last_day(events: Sequence[AnyEvent]) -> int | None:
    """UTC midnight of the last day with a search (None without searches)."""
    last = max((e.ts for e in events if isinstance(e, SearchEvent)), default=None)
    return None if last is None else last // DAY_MS * DAY_MS


def last_day_samples(
    items: Iterable[SourceItem], config: SampleConfig | None = None
) -> list[DaySample]:
    """One :class:`DaySample` per user with a search and, before their last search day, at
    least ``config.min_context`` behaviours. Every label of the day is kept (no
    ``max_labels`` cut). Users in first-seen order."""
    config = replace(config or SampleConfig(), max_labels=sys.maxsize)
    out: list[DaySample] = []
    for user_id, events in group_by_user(items).items():
        day = last_day(events)
        if day is None:
            continue
        sample = _proxy(user_id, events, day, day + DAY_MS, config)
        if sample is None:
            continue
        labels = tuple(dict.fromkeys(query_key(label) for label in sample.labels))
        before = [e for e in events if e.ts < day]
        past = frozenset(query_key(e.query) for e in before if isinstance(e, SearchEvent))
        triggers = recorded_triggers(before, day)
        out.append(DaySample(sample.context, day, labels, past - {""}, triggers))
    return out
