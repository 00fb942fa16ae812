"""The one percentile every benchmark and report uses."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float, *, presorted: bool = False) -> float:
    """Nearest-rank percentile (``q`` in [0, 1]): the smallest value with at least ``q`` of
    the values at or below it; NaN for no values. ``presorted`` skips the sort."""
    if not values:
        return math.nan
    ordered = values if presorted else sorted(values)
    return float(ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))])
