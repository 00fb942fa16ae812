"""A simulator of hint clicks for logs that have no hint feedback (AOL, Best Buy).

The public logs we replay record what users searched and clicked, but not what they did with
hint queries: nobody showed them any. To close the learning loop on them (the demo, the
end-to-end bench, tests, offline CTR data), this module turns a real search into a simulated
hint click **only when the user's real next search matches a hint that was shown to them**:

- an exposure (hints shown under one request) is decided by the user's first search that
  arrives after it and within ``window_s``;
- a shown hint matches that search when their normalised texts (:func:`cache.text.normalize`)
  are equal, or when their word-level ROUGE-L F1 is at least ``rouge_threshold``; the best
  match wins (ties: the lower position);
- the user examines position ``p`` (0-based) with probability ``(1 / (p + 1)) ** decay`` (the
  examination model of position bias): the match is clicked when a uniform draw falls below
  it. The draws come from one seeded RNG, one per decided exposure with a match, so the same
  inputs in the same order give the same clicks.

It is not a model of users: it never invents an intent the log does not show, and at most one
click comes from one exposure. The pure functions (:func:`examination`, :func:`rouge_l`,
:func:`match`, :func:`decide`) and the stateful but I/O-free :class:`ClickSimulator` are what
the CTR code and the tests use; ``aigq simulate`` (:mod:`streams.simulate`) runs it on Kafka.
docs/simulator.md says what it simulates and what it does not.
"""

from __future__ import annotations

import random
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from aigq.events import HintClickEvent, HintExposureEvent, ShownQuery
from aigq.settings import check_bind
from cache.text import normalize_cached

MAX_WINDOW_S = 7 * 86_400.0
RECENT_SEARCHES = 4  # searches kept per user for exposures that arrive after them

# Every outcome :class:`ClickSimulator` counts (``counts``): each exposure ends in exactly one of
# clicks, no_match, not_examined, expired, replaced, evicted, already_decided (or is pending).
COUNT_KEYS = (
    "exposures",
    "searches",
    "clicks",
    "no_match",
    "not_examined",
    "expired",
    "replaced",
    "evicted",
    "already_decided",
    "no_exposure",
    "evicted_searches",
)


class SimulatorSettings(BaseSettings):
    """The simulator's parameters and those of its process, ``aigq simulate``."""

    model_config = SettingsConfigDict(env_prefix="AIGQ_SIMULATOR_", frozen=True, extra="forbid")

    window_s: float = Field(
        1800.0,
        gt=0,
        le=MAX_WINDOW_S,
        description="the next search must come within this many seconds after the exposure",
    )
    rouge_threshold: float = Field(
        0.6,
        gt=0,
        le=1.0,
        description="ROUGE-L F1 (word level, normalised text) at or above which a search "
        "matches a shown hint (1.0: equality only)",
    )
    position_decay: float = Field(
        1.0,
        ge=0,
        le=10.0,
        description="position p (0-based) is examined with probability (1 / (p + 1)) ** this "
        "(0: every position is)",
    )
    seed: int = Field(0, ge=0, description="the RNG seed: the same inputs give the same clicks")
    max_users: int = Field(
        100_000,
        ge=1,
        le=10_000_000,
        description="users with a pending exposure (and with kept searches) held at most; the "
        "oldest is evicted and counted",
    )
    group_id: str = Field(
        "aigq-simulate", min_length=1, max_length=255, description="the process's consumer group"
    )
    auto_offset_reset: Literal["earliest", "latest"] = Field(
        "earliest", description="where a new consumer group starts reading"
    )
    metrics_port: int = Field(0, ge=0, le=65535, description="Prometheus /metrics (0: off)")
    metrics_bind: str = Field("127.0.0.1", description="address of the metrics endpoint")

    @field_validator("metrics_bind")
    @classmethod
    def _bind(cls, value: str) -> str:
        return check_bind(value)

    @property
    def window_ms(self) -> int:
        return int(self.window_s * 1000)


def examination(position: int, decay: float) -> float:
    """The probability that a user looks at the hint shown at ``position`` (0-based)."""
    if position < 0 or decay < 0:
        raise ValueError(f"position and decay must be >= 0, got {position}, {decay}")
    return float((1.0 / (position + 1)) ** decay)


def _lcs(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence of two word lists.

    Bit-parallel (Allison and Dix; Crochemore et al. 2001): one big-integer step per word of
    ``b``, so a pair of 1,000-character queries costs microseconds, not a quadratic table.
    Bit ``i`` of ``v`` is 0 where row ``i`` of the classic table steps up.
    """
    if not a or not b:
        return 0
    where: dict[str, int] = {}
    for i, word in enumerate(a):
        where[word] = where.get(word, 0) | (1 << i)
    full = (1 << len(a)) - 1
    v = full
    for word in b:
        u = v & where.get(word, 0)
        v = ((v + u) | (v - u)) & full
    return len(a) - v.bit_count()


def rouge_l(a: str, b: str) -> float:
    """Word-level ROUGE-L F1 of the normalised texts: ``2 * LCS / (|a| + |b|)``, in 0..1.

    Precision and recall weigh equally, so it is symmetric; empty text scores 0.
    """
    wa, wb = normalize_cached(a).split(), normalize_cached(b).split()
    if not wa or not wb:
        return 0.0
    return 2.0 * _lcs(wa, wb) / (len(wa) + len(wb))


def match(shown: str, search: str, threshold: float) -> float:
    """1.0 when the normalised texts are equal, else the ROUGE-L F1 if ``>= threshold``, else 0."""
    if normalize_cached(shown) == normalize_cached(search):
        return 1.0
    score = rouge_l(shown, search)
    return score if score >= threshold else 0.0


def best_match(exposure: HintExposureEvent, search: str, threshold: float) -> ShownQuery | None:
    """The shown hint that ``search`` matches best (ties: the lower position), or None."""
    best: ShownQuery | None = None
    best_score = 0.0
    for shown in sorted(exposure.shown, key=lambda s: s.position):
        score = match(shown.query, search, threshold)
        if score > best_score:
            best, best_score = shown, score
    return best


def decide(
    exposure: HintExposureEvent, search: str, settings: SimulatorSettings, draw: float
) -> ShownQuery | None:
    """The hint the user clicks when their next search is `search`: among the shown hints that
    match, the best match (ties: lower position); clicked when draw < examination(position).
    `draw` is a uniform [0,1) number given by the caller (so it is a pure function)."""
    best = best_match(exposure, search, settings.rouge_threshold)
    if best is None or draw >= examination(best.position, settings.position_decay):
        return None
    return best


@dataclass(slots=True)
class _Pending:
    exposure: HintExposureEvent
    at_ms: int


@dataclass(slots=True)
class _Search:
    at_ms: int
    query: str
    decided: bool = False  # it decided an exposure already: one decision per search


@dataclass(slots=True)
class _Recent:
    searches: deque[_Search] = field(default_factory=lambda: deque(maxlen=RECENT_SEARCHES))

    @property
    def newest_ms(self) -> int:
        return max(s.at_ms for s in self.searches)


class ClickSimulator:
    """Stateful but pure (no I/O): feed it exposures and searches in (roughly) arrival order
    with their arrival times (ms), it returns the clicks.

    Per user it keeps the newest pending exposure: an exposure is decided by the user's first
    search whose time is > the exposure's and <= exposure + window; a newer exposure of the user
    replaces an undecided older one, which counts as ``replaced``. Bounded: at most
    ``max_users`` users with a pending exposure (the oldest is evicted and counted).

    **Late exposures.** An exposure is logged just before the user's search is sent, but it
    travels through a batching producer and may arrive after that search. So the user's last
    :data:`RECENT_SEARCHES` searches are kept too (for at most ``max_users`` users, within the
    window), and an exposure is decided at once against the first kept search after it. A
    search decides one exposure at most: a late exposure whose next search already decided an
    older one counts as ``already_decided``.
    """

    def __init__(self, settings: SimulatorSettings, max_users: int = 100_000) -> None:
        if max_users < 1:
            raise ValueError(f"max_users must be >= 1, got {max_users}")
        self.settings = settings
        self.max_users = max_users
        self.counts: Counter[str] = Counter()
        self._rng = random.Random(settings.seed)
        self._window_ms = settings.window_ms
        self._pending: OrderedDict[str, _Pending] = OrderedDict()  # oldest arrival first
        self._recent: OrderedDict[str, _Recent] = OrderedDict()  # least recently searched first

    @property
    def pending(self) -> int:
        """Exposures waiting for their user's next search."""
        return len(self._pending)

    def on_exposure(self, exposure: HintExposureEvent, at_ms: int) -> HintClickEvent | None:
        """Take an exposure that arrived at ``at_ms``; a click when a kept search decides it."""
        self.counts["exposures"] += 1
        user = exposure.user_id
        later = self._next_search(user, at_ms)
        if later is not None:
            return self._decide_late(exposure, later)
        held = self._pending.get(user)
        if held is not None and held.at_ms > at_ms:
            self.counts["replaced"] += 1  # a newer exposure of the user is pending already
            return None
        if held is not None:
            self.counts["replaced"] += 1
            del self._pending[user]
        elif len(self._pending) >= self.max_users:
            self._pending.popitem(last=False)
            self.counts["evicted"] += 1
        self._pending[user] = _Pending(exposure, at_ms)
        return None

    def on_search(self, user_id: str, query: str, at_ms: int) -> HintClickEvent | None:
        """Take a search that arrived at ``at_ms``; the click it makes, if any."""
        self.counts["searches"] += 1
        search = self._keep(user_id, query, at_ms)
        held = self._pending.get(user_id)
        if held is not None and at_ms > held.at_ms + self._window_ms:
            del self._pending[user_id]
            self.counts["expired"] += 1
            held = None
        if held is None or at_ms <= held.at_ms:
            self.counts["no_exposure"] += 1
            return None
        del self._pending[user_id]
        search.decided = True
        return self._decide(held.exposure, query, at_ms)

    def expire(self, now_ms: int) -> int:
        """Drop pending exposures (and kept searches) older than the window; how many exposures.

        Entries are dropped oldest arrival first up to the first one still within the window;
        one that arrived out of order behind it waits for a later call (a search finding it
        stale counts it then).
        """
        cutoff = now_ms - self._window_ms
        dropped = 0
        while self._pending:
            user, held = next(iter(self._pending.items()))
            if held.at_ms >= cutoff:
                break
            del self._pending[user]
            dropped += 1
        while self._recent:
            user, recent = next(iter(self._recent.items()))
            if recent.newest_ms >= cutoff:
                break
            del self._recent[user]
        self.counts["expired"] += dropped
        return dropped

    # --- helpers ----------------------------------------------------------------------------

    def _decide(self, exposure: HintExposureEvent, query: str, at_ms: int) -> HintClickEvent | None:
        best = best_match(exposure, query, self.settings.rouge_threshold)
        if best is None:
            self.counts["no_match"] += 1
            return None
        if self._rng.random() >= examination(best.position, self.settings.position_decay):
            self.counts["not_examined"] += 1
            return None
        self.counts["clicks"] += 1
        return HintClickEvent(
            user_id=exposure.user_id,
            ts=at_ms,
            request_id=exposure.request_id,
            query=best.query,
            source=best.source,
            position=best.position,
            event_id=f"sim:{exposure.request_id}",
        )

    def _decide_late(self, exposure: HintExposureEvent, search: _Search) -> HintClickEvent | None:
        if search.decided:
            self.counts["already_decided"] += 1
            return None
        search.decided = True
        return self._decide(exposure, search.query, search.at_ms)

    def _next_search(self, user_id: str, at_ms: int) -> _Search | None:
        """The user's first kept search after ``at_ms`` if it is within the window; else None.

        A first search past the window leaves the exposure pending: it is then expired.
        """
        recent = self._recent.get(user_id)
        if recent is None:
            return None
        after = [s for s in recent.searches if s.at_ms > at_ms]
        if not after:
            return None
        first = min(after, key=lambda s: s.at_ms)
        return first if first.at_ms <= at_ms + self._window_ms else None

    def _keep(self, user_id: str, query: str, at_ms: int) -> _Search:
        recent = self._recent.get(user_id)
        if recent is None:
            if len(self._recent) >= self.max_users:
                self._recent.popitem(last=False)
                self.counts["evicted_searches"] += 1
            recent = self._recent[user_id] = _Recent()
        else:
            self._recent.move_to_end(user_id)
        search = _Search(at_ms, query)
        recent.searches.append(search)
        return search
