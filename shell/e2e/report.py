"""What one end-to-end run measured, from plain records: pure functions, tested with lists.

Times are wall-clock UTC milliseconds. A request's life, as the records tell it:

- ``ingest``: the Kafka timestamp of the behaviour that fired it (when it entered the topics);
- ``created``: the session worker emitted the request (at a flush);
- ``received``: the generator took it from ``<prefix>.regenerate``;
- ``generated``: its list was written to the u2q cache (the results record's time).

**Freshness** is ``generated - ingest``. **Model time** is the backend call of the request's
micro-batch (``model_ms``). **Waiting for the model** is the time, between ``created`` and
``received``, that the generator spent unable to take requests (its pending set full, or a
backend down: its ``blocked_ms`` stamps, read as a clock), when the request sat queued in
Kafka for model capacity, plus the request's own wait in the generator's pending set for a
generation slot (``queued_ms``), plus the trigger's wait for the regeneration budget in the
session worker (``created - fired``: docs/overload.md). The session stage is ``ingest`` to
``fired``: the worker's own latency. Freshness *excluding model time* takes out the model call
and every wait for it, and is what the nearline path itself adds: the session worker, Kafka
both ways, batching, Redis.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from aigq.events import HintClickEvent, HintExposureEvent
from cache.text import normalize


@dataclass(frozen=True, slots=True)
class Requested:
    """One regeneration request as read back from ``<prefix>.regenerate``."""

    user_id: str
    reason: str
    version: int
    created_ms: int
    ingest_ms: int | None


@dataclass(frozen=True, slots=True)
class Generated:
    """One results record (``generated_queries``) as read back from ``<prefix>.results``."""

    user_id: str
    version: int
    written: bool
    queries: tuple[str, ...]
    model_ms: float
    generated_ms: int
    created_ms: int
    ingest_ms: int | None
    received_ms: int | None
    blocked_ms: float | None = None
    queued_ms: float | None = None
    fired_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Probe:
    """What the read API served a user at the moment of one of their real searches."""

    user_id: str
    query: str
    at_ms: int
    hints: tuple[str, ...]
    status: int
    sources: tuple[str, ...] = ()  # each hint's source (history, u2q, x2q, popular)


@dataclass(frozen=True)
class Stages:
    """Per written run, in ms: each stage of the request's life (see the module doc)."""

    freshness: list[float] = field(default_factory=list)
    session: list[float] = field(default_factory=list)  # ingest -> created
    transit: list[float] = field(default_factory=list)  # created -> received
    generator: list[float] = field(default_factory=list)  # received -> generated
    model: list[float] = field(default_factory=list)
    model_wait: list[float] = field(default_factory=list)
    pipeline: list[float] = field(default_factory=list)  # freshness - model - model_wait


def blocked_clock(results: Iterable[Generated]) -> Callable[[float], float]:
    """The generator's blocked time as a function of wall time (ms), from its batch stamps
    ``(received, blocked)``: linear between stamps, flat outside them."""
    points = sorted({(r.received_ms, r.blocked_ms) for r in results
                     if r.received_ms is not None and r.blocked_ms is not None})  # fmt: skip
    times = [float(t) for t, _ in points]

    def at(t: float) -> float:
        i = bisect.bisect_right(times, t)
        if i == 0:
            return points[0][1] if points else 0.0
        if i == len(points):
            return points[-1][1]
        (t0, b0), (t1, b1) = points[i - 1], points[i]
        return b0 + (b1 - b0) * (t - t0) / (t1 - t0)

    return at


def stages(results: Sequence[Generated], since_ms: int = 0) -> Stages:
    """The stages of every written run whose behaviour was ingested at or after ``since_ms``."""
    out = Stages()
    blocked = blocked_clock(results)
    for r in results:
        if not r.written or r.ingest_ms is None or r.received_ms is None:
            continue
        if r.ingest_ms < since_ms:
            continue
        fresh = r.generated_ms - r.ingest_ms
        transit = r.received_ms - r.created_ms
        wait = min(max(0.0, blocked(r.received_ms) - blocked(r.created_ms)), max(transit, 0))
        fired = r.created_ms if r.fired_ms is None else min(r.fired_ms, r.created_ms)
        wait += (r.queued_ms or 0.0) + (r.created_ms - fired)
        out.freshness.append(fresh)
        out.session.append(max(fired - r.ingest_ms, 0))
        out.transit.append(transit)
        out.generator.append(r.generated_ms - r.received_ms)
        out.model.append(r.model_ms)
        out.model_wait.append(wait)
        out.pipeline.append(max(0.0, fresh - r.model_ms - wait))
    return out


def reasons(requests: Iterable[Requested]) -> Counter[str]:
    return Counter(r.reason for r in requests)


@dataclass(frozen=True)
class HitRate:
    searches: int
    hits: int
    served: int  # probes answered with a non-empty list
    by_source: Counter[str] = field(default_factory=Counter)  # hits, by the hint's source

    @property
    def rate(self) -> float:
        return self.hits / self.searches if self.searches else math.nan


def served_hit_rate(probes: Iterable[Probe], k: int = 10) -> HitRate:
    """Query HR@k of the served lists: a search is a hit when its query (normalised as the
    read path normalises) is among the first ``k`` hints served at that moment."""
    searches = hits = served = 0
    by_source: Counter[str] = Counter()
    for p in probes:
        searches += 1
        wanted = normalize(p.query)
        shown = [normalize(h) for h in p.hints[:k]]
        served += bool(shown)
        if wanted in shown:
            hits += 1
            at = shown.index(wanted)
            by_source[p.sources[at] if at < len(p.sources) else "unknown"] += 1
    return HitRate(searches, hits, served, by_source)


def list_hit_rate(probes: Iterable[Probe], results: Iterable[Generated], k: int = 10) -> HitRate:
    """Query HR@k of the generated lists alone: at each search, the user's newest list
    written to the cache by then (the results records: ``generated_ms``), whatever the read
    API composes around it. ``served`` counts the searches that had such a list. It is the
    generator's own part of the served hit rate, which history dominates (docs/overload.md)."""
    lists: dict[str, list[tuple[int, tuple[str, ...]]]] = {}
    for r in sorted(results, key=lambda r: r.generated_ms):
        if r.written and r.queries:
            lists.setdefault(r.user_id, []).append((r.generated_ms, r.queries))
    times = {user: [at for at, _ in written] for user, written in lists.items()}
    searches = hits = served = 0
    for p in probes:
        searches += 1
        written = lists.get(p.user_id)
        at = bisect.bisect_right(times[p.user_id], p.at_ms) if written else 0
        if written is None or at == 0:
            continue
        served += 1
        hits += normalize(p.query) in {normalize(q) for q in written[at - 1][1][:k]}
    return HitRate(searches, hits, served, Counter({"u2q": hits}))


@dataclass(frozen=True)
class LagSample:
    """One reading of the loop, taken every second during a run."""

    at_s: float  # since the replay started
    produced: int  # events sent so far
    session_lag: int  # events in the topics the session worker has not applied
    generator_lag: int  # requests in <prefix>.regenerate the generator has not taken


def lag_summary(samples: Sequence[LagSample]) -> tuple[int, int]:
    """The largest session and generator lag seen."""
    return (
        max((s.session_lag for s in samples), default=0),
        max((s.generator_lag for s in samples), default=0),
    )


NO_RUN = "(no u2q run)"


class VersionCtr(NamedTuple):
    """Served CTR of one model version: exposures, those with a hint click, the rate."""

    version: str
    exposures: int
    clicked: int

    @property
    def ctr(self) -> float:
        return self.clicked / self.exposures if self.exposures else 0.0


def served_ctr(
    exposures: Iterable[HintExposureEvent], clicks: Iterable[HintClickEvent]
) -> list[VersionCtr]:
    """Per model version (the exposure's ``model_version``; :data:`NO_RUN` when its list drew
    on no u2q run), how many exposures there were and how many got a hint click (a click
    counts for the exposure with its request id). Ordered by version name."""
    clicked = {(c.user_id, c.request_id) for c in clicks}
    shown: dict[str, list[int]] = {}
    for exposure in exposures:
        counts = shown.setdefault(exposure.model_version or NO_RUN, [0, 0])
        counts[0] += 1
        counts[1] += (exposure.user_id, exposure.request_id) in clicked
    return [VersionCtr(v, n, c) for v, (n, c) in sorted(shown.items())]
