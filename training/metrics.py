"""Offline metrics of hint-query lists: pure functions, plus the one sentence-embedding model.

Predictions and labels are compared by :func:`training.samples.query_key` (the text as the model
can say it, then the read path's normal form), so "Running  Shoes" hits "running shoes".

Definitions, for a prediction list ``P`` (most likely first) and a label list ``L``:

- ``hit_rate(P, L, k)`` (Query HR@K): 1.0 when any of ``P[:k]`` equals any query of ``L``,
  else 0.0; averaged over samples it is the share of samples with a hit. With ``L`` the label
  window it is the issue's proxy; with ``L = [next_query]`` it is the next-search HR@K the
  data README quotes for AOL.
- ``ndcg(P, L, k)``: binary relevance (a prediction is relevant when it is in ``L``; a repeated
  prediction counts once), DCG = sum of 1 / log2(rank + 1) over relevant ranks <= k, divided
  by the ideal DCG of min(k, |L|) relevant predictions.
- ``diversity(P, k, categories)``: distinct queries in ``P[:k]``, and distinct categories among
  those with a known category (for a web log, the domain its searchers clicked most).
- :class:`SemanticScorer`: mean over ``P[:k]`` of each prediction's best cosine similarity to a
  label, with all-MiniLM-L6-v2 embeddings.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from aigq.datasets.base import SourceItem
from aigq.events import ClickEvent, HintClickEvent, SearchEvent
from generators.embeddings import Embeddings
from training import TrainingError
from training.samples import Sample, group_by_user, query_key

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer


def _check_k(k: int) -> None:
    if k < 1:
        raise TrainingError(f"k must be >= 1, got {k}")


def hit_rate(predictions: Sequence[str], labels: Iterable[str], k: int) -> float:
    """1.0 when one of the top ``k`` predictions is one of ``labels`` (after normalisation)."""
    _check_k(k)
    wanted = {query_key(q) for q in labels} - {""}
    return 1.0 if any(query_key(p) in wanted for p in predictions[:k]) else 0.0


def ndcg(predictions: Sequence[str], labels: Sequence[str], k: int) -> float:
    """Binary-relevance NDCG@K (see the module docstring); 0.0 without labels."""
    _check_k(k)
    wanted = {query_key(q) for q in labels} - {""}
    if not wanted:
        return 0.0
    found: set[str] = set()
    dcg = 0.0
    for rank, prediction in enumerate(predictions[:k], start=1):
        key = query_key(prediction)
        if key in wanted and key not in found:
            found.add(key)
            dcg += 1.0 / math.log2(rank + 1)
    ideal = sum(1.0 / math.log2(rank + 1) for rank in range(1, min(k, len(wanted)) + 1))
    return dcg / ideal


class Diversity(NamedTuple):
    queries: int
    """distinct queries among the top k"""
    categories: int
    """distinct categories among those of the top k with a known category"""


def diversity(
    predictions: Sequence[str], k: int, categories: Mapping[str, str] | None = None
) -> Diversity:
    """Distinct queries and categories of the top ``k``; ``categories`` maps a query key to its
    category (:func:`query_categories`)."""
    _check_k(k)
    keys = {query_key(p) for p in predictions[:k]} - {""}
    known = {categories[key] for key in keys if key in categories} if categories else set()
    return Diversity(len(keys), len(known))


def query_categories(items: Iterable[SourceItem]) -> dict[str, str]:
    """Each query's category: the leaf category its searchers clicked most after it (before
    their next search). For AOL the leaf is the clicked domain.

    It learns from data: give it only the training users' events before the cut.
    """
    votes: dict[str, Counter[str]] = {}
    for events in group_by_user(items).values():
        current: str | None = None
        for event in events:
            if isinstance(event, SearchEvent):
                current = query_key(event.query)
            elif isinstance(event, ClickEvent) and current and event.category:
                votes.setdefault(current, Counter())[event.category[-1]] += 1
            elif isinstance(event, HintClickEvent):
                current = None
    return {key: counter.most_common(1)[0][0] for key, counter in votes.items()}


class SemanticScorer:
    """Semantic similarity of predictions to labels, embedding each distinct text once
    (:class:`generators.embeddings.Embeddings`: the model loads on first use)."""

    def __init__(self, model: SentenceTransformer | None = None, batch_size: int = 256) -> None:
        self._embeddings = Embeddings(model, batch_size)

    def embed(self, texts: Iterable[str]) -> None:
        """Embed (and keep) every text not embedded yet; call it with a whole evaluation's
        texts to batch them."""
        self._embeddings.embed(texts)

    def similarity(self, predictions: Sequence[str], labels: Sequence[str], k: int) -> float:
        """Mean over the top ``k`` predictions of the best cosine similarity to any label;
        0.0 when either side is empty."""
        _check_k(k)
        top = list(predictions[:k])
        if not top or not labels:
            return 0.0
        self.embed([*top, *labels])
        best = [max(self._embeddings.cosine(p, labels)) for p in top]
        return sum(best) / len(best)


@dataclass(frozen=True)
class EvalConfig:
    """What :func:`evaluate` reports."""

    ks: tuple[int, ...] = (1, 10, 30)
    """cut-offs K of HR@K, NDCG@K and diversity@K"""

    def __post_init__(self) -> None:
        if not self.ks or min(self.ks) < 1:
            raise TrainingError(f"ks must be non-empty and >= 1, got {self.ks}")


def evaluate(
    samples: Sequence[Sample],
    predictions: Sequence[Sequence[str]],
    config: EvalConfig | None = None,
    categories: Mapping[str, str] | None = None,
    semantic: SemanticScorer | None = None,
) -> dict[str, float]:
    """Means over samples: ``hr@K`` (label window), ``hr_next@K`` (next search, over samples
    that have one), ``ndcg@K``, ``distinct@K``, ``categories@K`` (with ``categories``) and
    ``semantic@K`` (with ``semantic``); ``samples`` is the count."""
    config = config or EvalConfig()
    if len(samples) != len(predictions):
        raise TrainingError(f"{len(samples)} samples but {len(predictions)} prediction lists")
    if semantic is not None:
        semantic.embed(
            t for s, p in zip(samples, predictions, strict=True) for t in [*p, *s.labels]
        )
    sums: defaultdict[str, float] = defaultdict(float)
    with_next = 0
    for sample, predicted in zip(samples, predictions, strict=True):
        with_next += sample.next_query is not None
        for k in config.ks:
            sums[f"hr@{k}"] += hit_rate(predicted, sample.labels, k)
            sums[f"ndcg@{k}"] += ndcg(predicted, sample.labels, k)
            seen = diversity(predicted, k, categories)
            sums[f"distinct@{k}"] += seen.queries
            if categories is not None:
                sums[f"categories@{k}"] += seen.categories
            if sample.next_query is not None:
                sums[f"hr_next@{k}"] += hit_rate(predicted, [sample.next_query], k)
            if semantic is not None:
                sums[f"semantic@{k}"] += semantic.similarity(predicted, sample.labels, k)
    out = {"samples": float(len(samples))}
    for name, total in sorted(sums.items()):
        count = with_next if name.startswith("hr_next@") else len(samples)
        out[name] = total / count if count else 0.0
    return out
