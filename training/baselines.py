"""Baselines the trained model must beat: ``fit(training samples)``, ``predict(context, k)``.

What a baseline learns it learns from the samples given to ``fit``: pass only the training
users' samples, cut before the evaluation cut (:func:`training.split.split_samples` builds
exactly those), and nothing of a held-out user or of the evaluation window can leak in.
Queries are compared by :func:`training.samples.query_key`; each comes out as first seen.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, Self

from training import TrainingError
from training.samples import Context, Sample, query_key


class Baseline(Protocol):
    def fit(self, samples: Sequence[Sample]) -> Self: ...

    def predict(self, context: Context, k: int) -> list[str]: ...


def _check_k(k: int) -> None:
    if k < 1:
        raise TrainingError(f"k must be >= 1, got {k}")


class MostPopular:
    """The same list for everyone: the queries in the most training samples' label lists
    (a sample counts a query once), ties to the first seen."""

    def __init__(self) -> None:
        self.ranked: list[str] = []
        self.count: Counter[str] = Counter()

    def fit(self, samples: Sequence[Sample]) -> Self:
        text: dict[str, str] = {}
        count: Counter[str] = Counter()
        for sample in samples:
            for label in sample.labels:  # distinct within a sample
                key = query_key(label)
                text.setdefault(key, label)
                count[key] += 1
        order = {key: i for i, key in enumerate(text)}
        self.count = count
        self.ranked = [text[key] for key in sorted(text, key=lambda q: (-count[q], order[q]))]
        return self

    def predict(self, context: Context, k: int) -> list[str]:
        _check_k(k)
        return self.ranked[:k]


class UserFrequent:
    """The user's own most frequent past searches (from the context), ties to the most recent.

    Learns nothing: ``fit`` is there for the common interface.
    """

    def fit(self, samples: Sequence[Sample]) -> Self:
        return self

    def predict(self, context: Context, k: int) -> list[str]:
        _check_k(k)
        count: Counter[str] = Counter()
        last: dict[str, int] = {}
        text: dict[str, str] = {}
        for i, query in enumerate(context.searches):
            key = query_key(query)
            if key:
                count[key] += 1
                last[key] = i
                text[key] = query
        ranked = sorted(count, key=lambda q: (-count[q], -last[q]))
        return [text[key] for key in ranked[:k]]


@dataclass(frozen=True)
class CoOccurrenceConfig:
    """How :class:`CoOccurrence` learns and scores."""

    history: int = 3
    """the user's last distinct searches that vote for what comes next"""
    decay: float = 0.5
    """a vote's weight per step back in that history (newest 1, then decay, decay**2...)"""
    max_targets: int = 10
    """labels of a training sample a transition is counted to (the strongest first)"""

    def __post_init__(self) -> None:
        if self.history < 1 or self.max_targets < 1:
            raise TrainingError("history and max_targets must be >= 1")
        if not 0.0 < self.decay <= 1.0:
            raise TrainingError(f"decay must be in (0, 1], got {self.decay}")


class CoOccurrence:
    """Query-to-next-query transitions: from each training sample's last few searches before
    its cut to the queries of its label window. A user is scored from their own last searches
    (sum of weighted transition probabilities), and the list is filled up by popularity."""

    def __init__(self, config: CoOccurrenceConfig | None = None) -> None:
        self.config = config or CoOccurrenceConfig()
        self.popular = MostPopular()
        self.transitions: dict[str, Counter[str]] = {}
        self.sources: Counter[str] = Counter()
        self.text: dict[str, str] = {}

    def _history(self, context: Context) -> list[str]:
        """The context's last distinct search keys, newest first."""
        out: list[str] = []
        for query in reversed(context.searches):
            key = query_key(query)
            if key and key not in out:
                out.append(key)
                if len(out) == self.config.history:
                    break
        return out

    def fit(self, samples: Sequence[Sample]) -> Self:
        self.popular.fit(samples)
        transitions: dict[str, Counter[str]] = {}
        sources: Counter[str] = Counter()
        for sample in samples:
            targets = [query_key(label) for label in sample.labels[: self.config.max_targets]]
            for label, key in zip(sample.labels, targets, strict=False):
                self.text.setdefault(key, label)
            for source in self._history(sample.context):
                sources[source] += 1
                transitions.setdefault(source, Counter()).update(targets)
        self.transitions, self.sources = transitions, sources
        return self

    def predict(self, context: Context, k: int) -> list[str]:
        _check_k(k)
        score: dict[str, float] = {}
        for step, source in enumerate(self._history(context)):
            seen = self.sources.get(source, 0)
            weight = self.config.decay**step
            for target, count in self.transitions.get(source, Counter()).items():
                score[target] = score.get(target, 0.0) + weight * count / seen
        popularity = self.popular.count
        ranked = sorted(score, key=lambda q: (-score[q], -popularity.get(q, 0), q))
        out = [self.text[key] for key in ranked[:k]]
        if len(out) < k:
            have = set(ranked[:k])
            fill = (q for q in self.popular.ranked if query_key(q) not in have)
            out.extend(q for _, q in zip(range(k - len(out)), fill, strict=False))
        return out
