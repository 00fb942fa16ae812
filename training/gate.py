"""Judging a generation candidate against the current model, on users neither trained on.

The trainer's gate (:mod:`training.trainer_cycle`): the held-out users of the feedback store
(by hash, :func:`training.split.is_heldout`) are scored with the last-day protocol
(:mod:`training.lastday`): each user's state before their last search day, that day's
distinct queries as labels. Both models generate through the worker's own transformers
backend (:class:`training.predictors.ModelPredictor`), greedy, so the same model gives the
same lists. The candidate is published when its hit@10 is at least the current model's minus
the tolerance: "not worse".
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from aigq.events import ClickEvent, SearchEvent
from training.daymetrics import day_metrics, vocabulary
from training.lastday import DaySample, last_day_samples
from training.predictors import ModelPredictor, PredictorConfig
from training.samples import AnyEvent


@dataclass(frozen=True)
class Judged:
    """One model's figures on the gate's users."""

    name: str
    metrics: dict[str, float]
    seconds: float

    @property
    def hit10(self) -> float:
        return self.metrics.get("hit@10", 0.0)


def gate_samples(heldout: Sequence[AnyEvent], max_users: int) -> list[DaySample]:
    """The held-out users' last-day samples, on the events' own clock (searches and clicks
    only: exposures are stamped with the serving clock), the first ``max_users``."""
    behaviour = [e for e in heldout if isinstance(e, SearchEvent | ClickEvent)]
    behaviour.sort(key=lambda e: e.ts)
    return last_day_samples(behaviour)[:max_users]


def judge(
    name: str,
    folder: Path,
    samples: Sequence[DaySample],
    vocab_events: Sequence[AnyEvent],
    max_tokens: int,
) -> Judged:
    """``folder``'s lists for ``samples`` and their last-day metrics (hit@K, real words...)."""
    started = time.perf_counter()
    predictor = ModelPredictor(name, folder, config=PredictorConfig(max_tokens=max_tokens))
    predictions = predictor.predict([s.context for s in samples])
    metrics = day_metrics(samples, predictions, vocabulary(vocab_events), (1, 3, 10))
    return Judged(name, metrics, time.perf_counter() - started)


def not_worse(candidate: float, current: float, tolerance: float) -> bool:
    """The gate: the candidate's score is at least the current one's minus ``tolerance``."""
    return candidate >= current - tolerance
