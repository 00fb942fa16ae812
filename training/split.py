"""A split of users and time without leakage, for training and offline evaluation.

Users are held out by a salted hash of their id (the same user is held out in every run and
every process, whatever the order of the log). Around one cut time:

- training samples come from the other users' events **before the cut** only, so neither a
  held-out user nor anything at or after the cut reaches training (nor a baseline fitted on
  them: popularity and co-occurrence learn only what they are given);
- evaluation samples come from the held-out users: context strictly before the cut, labels
  the searches in the window after it (:func:`training.samples.proxy_samples`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from aigq.datasets.base import Malformed, SourceItem
from aigq.events import MAX_TS_MS, MIN_TS_MS
from training import TrainingError
from training.samples import (
    AnyEvent,
    Sample,
    SampleConfig,
    proxy_samples,
    think_samples,
)

DEFAULT_SALT = "aigq-split-1"
TrainBuilder = Callable[[Iterable[SourceItem], SampleConfig], list[Sample]]
"""Builds training samples from events (:func:`~training.samples.think_samples` by default)."""


@dataclass(frozen=True)
class SplitConfig:
    """Where the split falls."""

    cut_ms: int
    """UTC epoch ms: training sees only events before it; evaluation labels start at it"""
    heldout_fraction: float = 0.1
    """share of users held out for evaluation, by hash of the user id"""
    salt: str = DEFAULT_SALT
    """changes which users are held out; keep it fixed to compare runs"""
    samples: SampleConfig = field(default_factory=SampleConfig)
    """how samples are cut (its ``window_ms`` is the evaluation label window)"""

    def __post_init__(self) -> None:
        if not MIN_TS_MS <= self.cut_ms < MAX_TS_MS:
            raise TrainingError(f"cut_ms must be UTC epoch milliseconds, got {self.cut_ms}")
        if not 0.0 < self.heldout_fraction < 1.0:
            raise TrainingError(f"heldout_fraction must be in (0, 1), got {self.heldout_fraction}")


def is_heldout(user_id: str, fraction: float, salt: str = DEFAULT_SALT) -> bool:
    """Whether ``user_id`` is held out: the first 8 bytes of BLAKE2b(salt, user id), read as a
    fraction of 2**64, fall below ``fraction``."""
    digest = hashlib.blake2b(user_id.encode(), digest_size=8, key=salt.encode()[:64]).digest()
    return int.from_bytes(digest, "big") < fraction * 2**64


class SplitEvents(NamedTuple):
    train: list[AnyEvent]
    """events of training users before the cut"""
    heldout: list[AnyEvent]
    """all events of held-out users (their samples cut them at the cut)"""


def split_events(items: Iterable[SourceItem], config: SplitConfig) -> SplitEvents:
    """One pass over a log: training users' events before the cut, held-out users' events.

    Training users' events at or after the cut are dropped here, so no later step can use them.
    """
    heldout: dict[str, bool] = {}
    out = SplitEvents([], [])
    for item in items:
        if isinstance(item, Malformed):
            continue
        user = item.user_id
        held = heldout.get(user)
        if held is None:
            held = heldout[user] = is_heldout(user, config.heldout_fraction, config.salt)
        if held:
            out.heldout.append(item)
        elif item.ts < config.cut_ms:
            out.train.append(item)
    return out


class SplitSamples(NamedTuple):
    train: list[Sample]
    """training users' samples, built from their events before the cut"""
    test: list[Sample]
    """held-out users' proxy samples at the cut"""


def split_samples(
    items: Iterable[SourceItem], config: SplitConfig, train: TrainBuilder = think_samples
) -> SplitSamples:
    """Training samples and held-out evaluation samples.

    ``train`` builds the training samples: user-day Think samples by default (on a log without
    hints, the proxy task's labels day by day), or :func:`~training.samples.direct_samples`.

    A training sample's label window ends at the cut at the latest: a day that straddles it is
    cut short there.
    """
    events = split_events(items, config)
    return SplitSamples(
        train=train(events.train, config.samples),
        test=proxy_samples(events.heldout, config.cut_ms, config.samples),
    )
