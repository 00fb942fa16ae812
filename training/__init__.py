"""Training and offline evaluation: samples, the user/time split, metrics and baselines.

:class:`TrainingError` is the package's error, under the project's exception root.
"""

from __future__ import annotations

from aigq.errors import AigqError


class TrainingError(AigqError, ValueError):
    """A training or evaluation input is invalid (bad config, missing optional dependency)."""


__all__ = ["TrainingError"]
