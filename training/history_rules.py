"""Where the user's own search history goes in the served list: candidate rules, measured.

The read path merges three recall sources (:mod:`cache.compose`): the generated u2q run, the
x2q lists of the user's latest triggers, and the user's history (:mod:`cache.history`, the
fold the session worker keeps). This module compares rules for placing history relative to the
generated list on held-out users, offline:

- each user's **last search day** (UTC) is the evaluation day; the context is everything
  before that day, the labels are that day's distinct queries (by
  :func:`~training.samples.query_key`); users without a search before it are skipped;
- the history is :func:`cache.history.fold` of the context's searches, cut to its top
  ``history_n`` by the fold's order (what the worker writes to Redis and the read path gets);
- the generated list is a stand-in for u2q: a baseline of :mod:`training.baselines` fitted on
  the *other* users (users are split into ``folds`` by hash; every user is held out once), so
  no held-out user's data reaches the baseline;
- the score is any-hit@k (:func:`training.metrics.hit_rate`): the share of users whose day
  contains one of the served list's first ``k`` queries.

The rules place history against the generated list as a whole, without an x2q index (the
served list with one is measured by ``aigq eval --x2q``, :mod:`training.x2q_offline`);
:func:`cache.compose.compose` applies the chosen rule to u2q and x2q merged (its
``HISTORY_LEAD`` is the measured choice; ``tests/training/test_history_rules.py`` holds the
two equal). ``aigq bench history`` prints the comparison.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import chain, zip_longest
from typing import Literal

from aigq.datasets.base import SourceItem
from aigq.events import SearchEvent
from cache.history import MAX_HISTORY, fold, top_queries
from training import TrainingError
from training.baselines import CoOccurrence, MostPopular
from training.metrics import hit_rate
from training.samples import (
    DAY_MS,
    AnyEvent,
    Sample,
    SampleConfig,
    group_by_user,
    proxy_samples,
    query_key,
    think_samples,
)
from training.split import is_heldout

Rule = Callable[[Sequence[str], Sequence[str], int], list[str]]
"""``(history, generated, k)`` -> the served list (deduplicated, at most ``k``)."""
StandIn = Literal["cooccurrence", "popular"]


def _take(queries: Iterable[str], k: int) -> list[str]:
    """The first ``k`` distinct queries (by :func:`query_key`), blanks skipped."""
    out: list[str] = []
    seen: set[str] = set()
    for query in queries:
        key = query_key(query)
        if key and key not in seen:
            seen.add(key)
            out.append(query)
            if len(out) == k:
                break
    return out


def _alternate(first: Sequence[str], second: Sequence[str], a: int, b: int) -> Iterator[str]:
    """``a`` of ``first``, ``b`` of ``second``, ... then the rest of whichever is longer."""
    blocks_a = [first[i : i + a] for i in range(0, len(first), a)]
    blocks_b = [second[i : i + b] for i in range(0, len(second), b)]
    for x, y in zip_longest(blocks_a, blocks_b, fillvalue=()):
        yield from x
        yield from y


def lead(n: int) -> Rule:
    """The first ``n`` history queries, then the generated list, then the rest of history."""

    def rule(history: Sequence[str], generated: Sequence[str], k: int) -> list[str]:
        return _take(chain(history[:n], generated, history[n:]), k)

    return rule


def interleave(history_per: int, generated_per: int, history_first: bool = True) -> Rule:
    """Blocks of ``history_per`` history and ``generated_per`` generated queries in turn."""

    def rule(history: Sequence[str], generated: Sequence[str], k: int) -> list[str]:
        if history_first:
            return _take(_alternate(history, generated, history_per, generated_per), k)
        return _take(_alternate(generated, history, generated_per, history_per), k)

    return rule


RULES: dict[str, Rule] = {
    "generated only (no history)": lambda h, g, k: _take(g, k),
    "history only": lambda h, g, k: _take(h, k),
    "generated first, then history": lambda h, g, k: _take(chain(g, h), k),
    "history first, then generated": lead(MAX_HISTORY),
    "top-1 history, then generated": lead(1),
    "top-3 history, then generated": lead(3),
    "top-5 history, then generated": lead(5),
    "interleave 1:1, history first": interleave(1, 1),
    "interleave 1:1, generated first": interleave(1, 1, history_first=False),
    "interleave 1:2, history first": interleave(1, 2),
}
"""The candidate rules, by name (``generated only`` is the served list without history)."""


@dataclass(frozen=True)
class RuleScore:
    """One rule's any-hit@k over the evaluated users."""

    rule: str
    hits: int
    users: int

    @property
    def rate(self) -> float:
        return self.hits / self.users if self.users else 0.0


@dataclass(frozen=True)
class Comparison:
    """The scores (in :data:`RULES` order) and what they were measured on."""

    scores: list[RuleScore]
    stand_in: StandIn
    k: int
    history_n: int
    keep: int
    users: int  # users in the log
    evaluated: int  # users with a context and a last day
    in_history: float  # share of evaluated users whose last day repeats a history query


def last_day_sample(events: Sequence[AnyEvent]) -> Sample | None:
    """The user's last-search-day sample: context before that UTC day, labels that day's
    distinct queries (all of them); None without a search, or without one before that day."""
    last = max((e.ts for e in events if isinstance(e, SearchEvent)), default=None)
    if last is None:
        return None
    cut = last // DAY_MS * DAY_MS
    config = SampleConfig(window_ms=DAY_MS, max_labels=10_000, max_history=1_000_000)
    samples = proxy_samples(events, cut, config)
    sample = samples[0] if samples else None
    if sample is None or not sample.context.searches:
        return None
    return sample


def user_history(searches: Sequence[str], n: int, keep: int = MAX_HISTORY) -> list[str]:
    """The top ``n`` of the fold of ``searches`` (oldest first): what the worker would hold."""
    return top_queries(fold(((q, i) for i, q in enumerate(searches)), keep), n)


def compare_rules(
    items: Iterable[SourceItem],
    stand_in: StandIn = "cooccurrence",
    k: int = 10,
    history_n: int = 10,
    keep: int = MAX_HISTORY,
    folds: int = 2,
    rules: dict[str, Rule] | None = None,
) -> Comparison:
    """Score every rule on every user held out once (see the module docstring)."""
    if folds < 2:
        raise TrainingError(f"folds must be >= 2, got {folds}")
    if k < 1 or history_n < 1 or not 1 <= keep <= MAX_HISTORY:
        raise TrainingError("k and history_n must be >= 1, keep in 1..MAX_HISTORY")
    chosen = rules or RULES
    users = group_by_user(items)
    hits = dict.fromkeys(chosen, 0)
    evaluated = repeated = 0
    for f in range(folds):
        test = {
            u: e
            for u, e in users.items()
            if is_heldout(u, (f + 1) / folds) and not is_heldout(u, f / folds)
        }
        if f == folds - 1:  # the last fold takes every user left (fraction 1.0 is excluded)
            test = {u: e for u, e in users.items() if not is_heldout(u, f / folds)}
        train = [e for u, events in users.items() if u not in test for e in events]
        baseline = (CoOccurrence() if stand_in == "cooccurrence" else MostPopular()).fit(
            think_samples(train)
        )
        for events in test.values():
            sample = last_day_sample(events)
            if sample is None:
                continue
            evaluated += 1
            history = user_history(sample.context.searches, history_n, keep)
            generated = baseline.predict(sample.context, k)
            labels = {query_key(q) for q in sample.labels}
            if any(query_key(q) in labels for q in history):
                repeated += 1
            for name, rule in chosen.items():
                hits[name] += int(hit_rate(rule(history, generated, k), sample.labels, k))
    return Comparison(
        scores=[RuleScore(name, hits[name], evaluated) for name in chosen],
        stand_in=stand_in,
        k=k,
        history_n=history_n,
        keep=keep,
        users=len(users),
        evaluated=evaluated,
        in_history=repeated / evaluated if evaluated else 0.0,
    )
