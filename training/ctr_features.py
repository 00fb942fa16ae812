"""The CTR model's features: pure functions of one :class:`~training.ctr_data.CtrExample`.

Each feature is one short function a reader can check by hand:

- ids, looked up in embedding tables: the user id's hash bucket (:func:`user_bucket`); the
  query's words, hashed into buckets (:func:`query_word_ids`, a bag); the position
  (:func:`position_id`); the recall source (:func:`source_id`); the words of the user's last
  behaviours (:func:`recent_word_ids`, a bag);
- dense numbers (:func:`dense_features`, named by :data:`DENSE_NAMES`): how often and how long
  ago the user searched this very query, its ROUGE-L and word overlap with the user's last
  search, whether it is in the user's history, its popularity in the training data (times
  shown, times clicked, smoothed CTR: :class:`Popularity`) and the user's activity.

Hashing is :func:`stable_hash` (CRC-32 of the namespaced text), never Python's ``hash()``,
which changes from process to process: a saved model must find the same buckets when loaded.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from aigq.events import MAX_SHOWN_QUERIES
from streams.simulator import rouge_l
from training import TrainingError
from training.ctr_data import CtrExample, history_key
from training.samples import query_key

SOURCES = ("history", "u2q", "x2q", "popular")
"""recall sources with an embedding of their own (id 1..4); any other is id 0"""
MINUTES_CAP = 30 * 24 * 60
"""minutes since a query was last searched are capped at 30 days (also: never searched)"""
DENSE_NAMES = (
    "log1p_times_searched",
    "log1p_minutes_since_searched",
    "rouge_l_last_search",
    "word_overlap_last_search",
    "in_history",
    "log1p_popularity_shown",
    "log1p_popularity_clicked",
    "popularity_ctr",
    "log1p_user_searches",
)


@dataclass(frozen=True)
class FeatureConfig:
    """Sizes of the hashed feature spaces (saved with a model: they fix its buckets)."""

    user_buckets: int = 1 << 14
    """user id hash buckets (collisions share an embedding)"""
    word_buckets: int = 1 << 16
    """word hash buckets, for the query's words and the recent behaviours' words"""
    query_words: int = 8
    """a query's first words kept"""
    recent_words: int = 32
    """distinct words of the recent behaviours kept, newest behaviour first"""
    smoothing: float = 20.0
    """popularity CTR: (clicks + smoothing * global rate) / (shown + smoothing)"""

    def __post_init__(self) -> None:
        for name in ("user_buckets", "word_buckets", "query_words", "recent_words"):
            if getattr(self, name) < 2:
                raise TrainingError(f"{name} must be >= 2, got {getattr(self, name)}")
        if self.smoothing <= 0:
            raise TrainingError(f"smoothing must be > 0, got {self.smoothing}")


def stable_hash(namespace: str, text: str, buckets: int) -> int:
    """``text``'s bucket in 1..buckets-1 (0 is padding): CRC-32 of ``namespace:text``, the
    same in every process and on every machine."""
    return 1 + zlib.crc32(f"{namespace}:{text}".encode()) % (buckets - 1)


def user_bucket(user_id: str, config: FeatureConfig) -> int:
    """The user id's hash bucket."""
    return stable_hash("u", user_id, config.user_buckets)


def words(text: str) -> list[str]:
    """``text``'s words as the model reads them: normalised (:func:`query_key`), split."""
    return query_key(text).split()


def query_word_ids(query: str, config: FeatureConfig) -> list[int]:
    """The query's first ``query_words`` words, hashed (a bag: order is not kept)."""
    return [stable_hash("w", w, config.word_buckets) for w in words(query)[: config.query_words]]


def recent_word_ids(recent: Sequence[str], config: FeatureConfig) -> list[int]:
    """The distinct words of the recent behaviours' texts, newest behaviour first, hashed;
    at most ``recent_words``."""
    seen: dict[str, None] = {}
    for text in reversed(recent):
        for word in words(text):
            seen.setdefault(word)
            if len(seen) == config.recent_words:
                break
        if len(seen) == config.recent_words:
            break
    return [stable_hash("w", w, config.word_buckets) for w in seen]


def position_id(position: int) -> int:
    """The 0-based position, cut to the largest one an exposure can show."""
    return min(max(position, 0), MAX_SHOWN_QUERIES - 1)


def source_id(source: str) -> int:
    """1 + the index of a known recall source (:data:`SOURCES`), 0 for any other."""
    return SOURCES.index(source) + 1 if source in SOURCES else 0


def minutes_since(now_ms: int, then_ms: int | None) -> float:
    """Minutes from ``then_ms`` to ``now_ms``, in 0..MINUTES_CAP (None: never, the cap)."""
    if then_ms is None:
        return float(MINUTES_CAP)
    return min(max(now_ms - then_ms, 0) / 60_000, float(MINUTES_CAP))


def word_overlap(a: str, b: str) -> float:
    """Jaccard overlap of the two texts' word sets, in 0..1 (0 when either is empty)."""
    wa, wb = set(words(a)), set(words(b))
    if not wa or not wb:
        return 0.0
    return len(wa & wb) / len(wa | wb)


@dataclass
class Popularity:
    """How often each query (by :func:`query_key`) was shown and clicked in training data."""

    counts: dict[str, list[int]] = field(default_factory=dict)
    """query key -> [times shown, times clicked]"""
    shown: int = 0
    clicked: int = 0

    def add(self, example: CtrExample) -> None:
        entry = self.counts.setdefault(query_key(example.query), [0, 0])
        entry[0] += 1
        entry[1] += example.label
        self.shown += 1
        self.clicked += example.label

    @property
    def rate(self) -> float:
        """The global click rate (0 when nothing was shown)."""
        return self.clicked / self.shown if self.shown else 0.0

    def of(self, query: str) -> tuple[int, int]:
        """(times shown, times clicked) of ``query``; (0, 0) when never shown."""
        shown, clicked = self.counts.get(query_key(query), (0, 0))
        return shown, clicked

    def ctr(self, shown: int, clicked: int, smoothing: float, rate: float | None = None) -> float:
        """The smoothed CTR: with no data the global rate, with much data the query's own."""
        prior = self.rate if rate is None else rate
        return (clicked + smoothing * prior) / (shown + smoothing)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Popularity:
        counts = {str(k): [int(v[0]), int(v[1])] for k, v in data["counts"].items()}
        return cls(counts, int(data["shown"]), int(data["clicked"]))


def fit_popularity(rows: Iterable[CtrExample]) -> Popularity:
    """The popularity table of ``rows``."""
    table = Popularity()
    for row in rows:
        table.add(row)
    return table


def prefix_popularity(rows: Sequence[CtrExample]) -> list[tuple[int, int]]:
    """Each row's (times shown, times clicked) counted over the rows of **earlier** exposures
    only (by ``context.now_ms``; rows of one time do not see each other).

    Why: a training row must not see its own label, nor later ones, through its popularity;
    a test row sees the training days' table, which is also all in its past.
    """
    order = sorted(range(len(rows)), key=lambda i: rows[i].context.now_ms)
    out: list[tuple[int, int]] = [(0, 0)] * len(rows)
    table = Popularity()
    start = 0
    while start < len(order):
        end = start
        now = rows[order[start]].context.now_ms
        while end < len(order) and rows[order[end]].context.now_ms == now:
            out[order[end]] = table.of(rows[order[end]].query)
            end += 1
        for i in order[start:end]:
            table.add(rows[i])
        start = end
    return out


def dense_features(
    row: CtrExample,
    popularity: tuple[int, int],
    table: Popularity,
    config: FeatureConfig,
) -> list[float]:
    """The row's dense numbers, in :data:`DENSE_NAMES` order; ``popularity`` is the query's
    (times shown, times clicked), from ``table`` or from :func:`prefix_popularity`."""
    context = row.context
    shown, clicked = popularity
    return [
        math.log1p(row.times_searched),
        math.log1p(minutes_since(context.now_ms, row.last_searched_ms)),
        rouge_l(row.query, context.last_search) if context.last_search else 0.0,
        word_overlap(row.query, context.last_search),
        float(history_key(row.query) in context.history),
        math.log1p(shown),
        math.log1p(clicked),
        table.ctr(shown, clicked, config.smoothing),
        math.log1p(context.searches),
    ]
