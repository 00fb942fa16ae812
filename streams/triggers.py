"""When does a user's behaviour call for fresh hint queries? The interest-change trigger policy.

The paper (§4.1) runs AIGQ-Direct "upon detecting meaningful behavioural signals" without
publishing the rule. Ours, evaluated on each behaviour (search, click, hint click) in event time:

- ``cold_start``: the user has never triggered a regeneration;
- ``drift``: the decayed interest profile moved away from the one the last regeneration used by
  at least ``drift_threshold`` in cosine distance;
- ``new_category``: a click into a category (or a URL's host) absent from the recent behaviours;
- ``novel_search``: a search (or hint click) that is no near-duplicate of a recent one (word
  Jaccard similarity below ``near_duplicate``);
- ``stale``: an active user whose last regeneration is older than ``stale_after_ms``.

``TriggerPolicy(every_event=True)`` is the baseline it is measured against: every behaviour
fires (reason ``every_event`` when none of the above holds) and nothing is debounced.

The first of these that holds is the reason. A signal within ``debounce_ms`` of the user's last
trigger is ``debounced``; no signal is ``no_signal``. Every fired trigger also carries the
interest *shift* (cosine distance from the last trigger's profile, 1.0 at cold start): when
the budget cannot pay for all, the largest shifts fire first (:mod:`streams.processor`).
"""

from __future__ import annotations

import functools
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, TypeVar, get_args

from aigq.events import TriggerReason
from streams.session import (
    BEHAVIOURS,
    Session,
    SessionConfig,
    apply_event,
    category_of,
    mark_triggered,
)

Reason = TriggerReason
Outcome = Reason | Literal["debounced", "no_signal"]
REASONS: tuple[Reason, ...] = get_args(TriggerReason)
_WORD = re.compile(r"[^\W_]+", re.UNICODE)


@dataclass(frozen=True, slots=True)
class TriggerPolicy:
    """The knobs of the trigger rule (event-time milliseconds)."""

    near_duplicate: float = 0.6
    """word Jaccard at or above which a search repeats a recent one"""
    drift_threshold: float = 0.6
    """cosine distance from the last trigger's profile that counts as drift"""
    stale_after_ms: int = 6 * 3_600_000
    """an active user's hint queries are refreshed at least this often"""
    debounce_ms: int = 300_000
    """no two triggers of one user closer than this"""
    every_event: bool = False
    """the baseline policy: every behaviour fires, undebounced (``every_event`` when no other
    reason holds); the end-to-end benchmark compares the rule above against it"""

    def __post_init__(self) -> None:
        for name in ("near_duplicate", "drift_threshold"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)}")
        if self.stale_after_ms < 1 or self.debounce_ms < 0:
            raise ValueError("stale_after_ms must be >= 1 and debounce_ms >= 0")


class Decision(NamedTuple):
    outcome: Outcome
    shift: float = 0.0

    @property
    def fired(self) -> bool:
        return self.outcome in REASONS


NO_SIGNAL = Decision("no_signal")


@functools.lru_cache(maxsize=65_536)  # recent queries are compared again and again
def words(text: str) -> frozenset[str]:
    return frozenset(_WORD.findall(text.lower()))


def is_novel_query(text: str, recent: Sequence[Sequence[Any]], near_duplicate: float) -> bool:
    """True unless a recent search or hint click shares ``near_duplicate`` of its words."""
    mine = words(text)
    if not mine:
        return False
    for behaviour in recent:
        if behaviour[1] == "click":
            continue
        theirs = words(behaviour[2])
        if mine.isdisjoint(theirs):  # most are: no set is built for them
            continue
        shared = len(mine & theirs)
        if shared / (len(mine) + len(theirs) - shared) >= near_duplicate:
            return False
    return True


def step(
    session: Session,
    config: SessionConfig,
    policy: TriggerPolicy,
    kind: Any,
    ts: int,
    text: str,
    category: Sequence[str],
) -> Decision:
    """Apply one event to ``session`` and decide whether it triggers a regeneration.

    On a fired trigger the session records it (time, fingerprint, profile snapshot), so the
    decision is part of the state and a replay of the same events decides the same.
    """
    if kind not in BEHAVIOURS:
        apply_event(session, config, kind, ts, text, category)
        return NO_SIGNAL
    if kind == "click":
        path = category_of(category)
        novel = bool(category) and all(b[3] != path for b in session.recent)
        signal: Outcome = "new_category" if novel else "no_signal"
    else:
        novel = is_novel_query(text, session.recent, policy.near_duplicate)
        signal = "novel_search" if novel else "no_signal"
    apply_event(session, config, kind, ts, text, category)

    last = session.trigger_ts
    shift = session.shift
    if last is None:
        signal, shift = "cold_start", 1.0
    elif shift >= policy.drift_threshold:
        signal = "drift"
    elif signal == "no_signal" and ts - last >= policy.stale_after_ms:
        signal = "stale"
    if signal == "no_signal":
        if not policy.every_event:
            return NO_SIGNAL
        signal = "every_event"
    if last is not None and ts - last < policy.debounce_ms and not policy.every_event:
        return Decision("debounced", shift)
    mark_triggered(session, config, ts)
    return Decision(signal, shift)


T = TypeVar("T")


def govern(
    candidates: Sequence[T], budget: int, shift: Callable[[T], float]
) -> tuple[list[T], list[T]]:
    """Keep the ``budget`` candidates with the largest shift (ties: earlier first)."""
    if budget >= len(candidates):
        return list(candidates), []
    order = sorted(range(len(candidates)), key=lambda i: (-shift(candidates[i]), i))
    keep = set(order[: max(budget, 0)])
    kept = [c for i, c in enumerate(candidates) if i in keep]
    dropped = [c for i, c in enumerate(candidates) if i not in keep]
    return kept, dropped


class CostGovernor:
    """A local token bucket over regenerations: ``rate_per_s`` sustained, ``burst`` at most at
    once (``aigq backfill``, or a worker without the shared budget of :mod:`cache.budget`).

    ``grant`` is called once per flush with how many users triggered since; what it does not
    grant stays pending (see :mod:`streams.processor`). ``rate_per_s=0`` grants all.
    """

    def __init__(
        self,
        rate_per_s: float,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate_per_s < 0:
            raise ValueError(f"rate_per_s must be >= 0, got {rate_per_s}")
        self.rate_per_s = rate_per_s
        self.burst = burst if burst is not None else max(rate_per_s, 1.0)
        self._clock = clock
        self._tokens = self.burst
        self._last = clock()

    def grant(self, wanted: int) -> int:
        if self.rate_per_s == 0:
            return wanted
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate_per_s)
        self._last = now
        granted = min(wanted, math.floor(self._tokens))
        self._tokens -= granted
        return granted
