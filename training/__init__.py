"""Training and offline evaluation: samples, the user/time split, metrics and baselines.

:class:`TrainingError` is the package's error, under the project's exception root.
"""

from __future__ import annotations

from typing import Literal

from aigq.errors import AigqError

TargetOrder = Literal["shown", "recurring"]
"""How a proxy target orders the history it copies: ``training.samples.history_first`` (the
prompt's order) or ``training.samples.recurring_first`` (what the labels repeat first)."""


class TrainingError(AigqError, ValueError):
    """A training or evaluation input is invalid (bad config, missing optional dependency)."""


__all__ = ["TargetOrder", "TrainingError"]
