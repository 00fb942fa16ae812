"""A user's own search history as a recall source: the queries they keep coming back to.

Production query suggestion shows a user's frequent and recent searches beside generated ones;
on AOL "the user's most frequent past queries" is the strongest simple predictor of what they
search next. The session worker folds each search into a bounded table (pure, here), the
generator's prompt carries its top entries (the paper's "User Profile"), and the read path
merges them with u2q and x2q (:mod:`cache.compose`).

The table is ``normalised query -> [count, last event time ms]`` (the query cut to
:data:`cache.text.MAX_KEY_CHARS`, so a table is bounded in bytes too), at most ``keep`` entries. A
new query on a full table evicts the weakest entry (lowest count, then oldest), so a query
searched often survives any number of one-off searches; a one-off search always enters (it is
the user's newest and may be the start of a new interest). Offline evaluation folds the same
way, so what it measures is what the worker keeps.
"""

from __future__ import annotations

from collections.abc import Iterable

from cache.text import MAX_KEY_CHARS, normalize

MAX_HISTORY = 64
"""The most entries a table may hold (what a state, a request and a Redis entry are bounded by)."""

TOP_STORED = 20
"""The most queries of a table that leave the session: written to Redis per user
(:mod:`cache.history_store`), hence the most the read path may put in a list."""

History = dict[str, list[int]]


def add_search(history: History, query: str, ts: int, keep: int = MAX_HISTORY) -> None:
    """Fold one search (raw text, event time in ms) into ``history``, in place."""
    key = normalize(query, MAX_KEY_CHARS)
    if not key:
        return
    entry = history.get(key)
    if entry is not None:
        entry[0] += 1
        entry[1] = max(entry[1], ts)
        return
    if len(history) >= keep:
        weakest = min(history, key=lambda k: (history[k][0], history[k][1]))
        del history[weakest]
    history[key] = [1, ts]


def top_queries(history: History, n: int) -> list[str]:
    """The ``n`` strongest queries: most searched first, then most recent."""
    ranked = sorted(history.items(), key=lambda kv: (-kv[1][0], -kv[1][1], kv[0]))
    return [query for query, _ in ranked[:n]]


def fold(searches: Iterable[tuple[str, int]], keep: int = MAX_HISTORY) -> History:
    """The table of a sequence of ``(query, ts)`` searches, in event order."""
    history: History = {}
    for query, ts in searches:
        add_search(history, query, ts, keep)
    return history
