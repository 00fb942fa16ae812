"""Offline evaluation of the CTR model on later days, beside two baselines; and
:func:`train_ctr`, the whole run (examples, split, train, evaluate, optionally publish) that
``aigq train ctr`` and the trainer call.

Metrics: :func:`auc` (rank-based: the probability that a random click scores above a random
non-click, ties counting one half) and :func:`log_loss`. Baselines, fitted on the training
days only: :class:`PositionBaseline` (smoothed CTR per position) and
:class:`QueryPopularityBaseline` (smoothed CTR per normalised query, the global rate for a
query never shown). The goal the lead reports: the model's AUC at least the better
baseline's + :data:`AUC_MARGIN` on the held-out days.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

from aigq.registry import ModelRef, Registry
from training import TrainingError
from training.ctr_data import CtrExample, LabelStats, examples, split_by_day
from training.ctr_features import FeatureConfig, fit_popularity
from training.ctr_model import CtrConfig, Log, TrainedCtr, train
from training.ctr_model import publish as publish_version
from training.samples import AnyEvent

AUC_MARGIN = 0.03
"""the model's AUC must beat the better baseline's by this much (issue 19)"""
EPS = 1e-7


def auc(labels: Sequence[int], scores: Sequence[float]) -> float:
    """Area under the ROC curve: the Mann-Whitney statistic over average ranks (tied scores
    share the mean of their ranks). 0.5 when there are not both labels."""
    if len(labels) != len(scores):
        raise TrainingError(f"{len(labels)} labels but {len(scores)} scores")
    positives = sum(1 for y in labels if y)
    negatives = len(labels) - positives
    if not positives or not negatives:
        return 0.5
    order = sorted(range(len(scores)), key=scores.__getitem__)
    rank_sum = 0.0
    start = 0
    while start < len(order):  # ranks start at 1; a run of ties gets their mean rank
        end = start
        while end + 1 < len(order) and scores[order[end + 1]] == scores[order[start]]:
            end += 1
        mean_rank = (start + end) / 2 + 1
        rank_sum += mean_rank * sum(1 for i in order[start : end + 1] if labels[i])
        start = end + 1
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def log_loss(labels: Sequence[int], probabilities: Sequence[float]) -> float:
    """Mean binary cross-entropy, probabilities clipped to [1e-7, 1 - 1e-7]."""
    if len(labels) != len(probabilities) or not labels:
        raise TrainingError("log_loss needs as many probabilities as labels, at least one")
    total = 0.0
    for y, p in zip(labels, probabilities, strict=True):
        p = min(max(p, EPS), 1 - EPS)
        total -= math.log(p) if y else math.log(1 - p)
    return total / len(labels)


class PositionBaseline:
    """p(click) = the training days' smoothed CTR of the row's position."""

    def __init__(self, smoothing: float = FeatureConfig.smoothing) -> None:
        self.smoothing = smoothing
        self.counts: dict[int, list[int]] = {}
        self.rate = 0.0

    def fit(self, rows: Sequence[CtrExample]) -> PositionBaseline:
        for row in rows:
            entry = self.counts.setdefault(row.position, [0, 0])
            entry[0] += 1
            entry[1] += row.label
        self.rate = sum(r.label for r in rows) / len(rows) if rows else 0.0
        return self

    def predict(self, rows: Sequence[CtrExample]) -> list[float]:
        out = []
        for row in rows:
            shown, clicked = self.counts.get(row.position, (0, 0))
            out.append((clicked + self.smoothing * self.rate) / (shown + self.smoothing))
        return out


class QueryPopularityBaseline:
    """p(click) = the training days' smoothed CTR of the normalised query (the global rate
    for a query they never showed)."""

    def __init__(self, smoothing: float = FeatureConfig.smoothing) -> None:
        self.smoothing = smoothing
        self.table = fit_popularity(())

    def fit(self, rows: Sequence[CtrExample]) -> QueryPopularityBaseline:
        self.table = fit_popularity(rows)
        return self

    def predict(self, rows: Sequence[CtrExample]) -> list[float]:
        return [self.table.ctr(*self.table.of(row.query), self.smoothing) for row in rows]


class MetricRow(NamedTuple):
    """One line of the table: a scorer on the test rows."""

    model: str
    auc: float
    log_loss: float
    examples: int
    positives: int


def metric_row(name: str, rows: Sequence[CtrExample], scores: Sequence[float]) -> MetricRow:
    labels = [row.label for row in rows]
    return MetricRow(name, auc(labels, scores), log_loss(labels, scores), len(rows), sum(labels))


def baseline_rows(train: Sequence[CtrExample], test: Sequence[CtrExample]) -> list[MetricRow]:
    """Both baselines fitted on ``train``, scored on ``test``."""
    position = PositionBaseline().fit(train)
    query = QueryPopularityBaseline().fit(train)
    return [
        metric_row("position-only", test, position.predict(test)),
        metric_row("query-popularity", test, query.predict(test)),
    ]


def goal_met(rows: Sequence[MetricRow]) -> tuple[bool, float]:
    """(model AUC >= the better baseline's + margin, that baseline's AUC); the model's row
    first, the baselines after it."""
    best = max(row.auc for row in rows[1:])
    return rows[0].auc >= best + AUC_MARGIN, best


@dataclass
class CtrRun:
    """What :func:`train_ctr` made: the model's registry version (published or not), the
    metrics table (the model's row first), what the data held, and the trained model."""

    model: ModelRef
    rows: list[MetricRow]
    published: bool
    data: dict[str, Any]
    trained: TrainedCtr

    @property
    def goal(self) -> bool:
        return goal_met(self.rows)[0]

    @property
    def metrics(self) -> dict[str, Any]:
        """What the manifest records: the test table and the goal's verdict."""
        return {"test": [row._asdict() for row in self.rows], "goal_met": self.goal}

    def publish(self, registry: Registry) -> ModelRef:
        """Publish the model (a trainer that found it not worse than the current one)."""
        if not self.published:
            publish_version(registry, self.trained, self.data, self.metrics)
            self.published = True
        return self.model


def train_ctr(
    events_by_user: Mapping[str, Sequence[AnyEvent]],
    cut_ms: int,
    config: CtrConfig,
    registry: Registry,
    publish: bool = False,
    data: dict[str, Any] | None = None,
    log: Log = lambda _: None,
) -> CtrRun:
    """Label the events' exposures, train on those before ``cut_ms``, evaluate on the later
    ones beside the baselines; publish the model only when ``publish`` (the trainer compares
    first, then calls :meth:`CtrRun.publish`). ``data`` (where the events came from) goes
    into the manifest's data."""
    stats = LabelStats()
    rows = examples(events_by_user, stats=stats)
    train_rows, test_rows = split_by_day(rows, cut_ms)
    del rows
    if not test_rows:
        raise TrainingError("no exposure at or after the cut to evaluate on")
    log(f"{len(train_rows):,} training rows, {len(test_rows):,} test rows")
    trained = train(train_rows, config, registry, log)
    table = [metric_row(config.name, test_rows, trained.model.score(test_rows))]
    table += baseline_rows(train_rows, test_rows)
    info: dict[str, Any] = {
        **(data or {}), "labelling": asdict(stats), "cut_ms": cut_ms, "users": len(events_by_user),
        "train_rows": len(train_rows), "train_positives": sum(r.label for r in train_rows),
    }  # fmt: skip
    run = CtrRun(trained.ref, table, False, info, trained)
    if publish:
        run.publish(registry)
    return run
