"""The read API's Prometheus metrics (names under ``aigq_serve_``).

A request updates plain integers here; a collector registered in the process's
:class:`~aigq.metrics.Metrics` registry turns them into counters and a histogram when
Prometheus scrapes. prometheus-client's own metric objects take a lock on every update:
with five updates per request that was about 5 µs, measurable against a ~70 µs request.
The event loop is single-threaded, so the plain integers need no lock.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import get_args

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from aigq.logging import write_errors
from aigq.metrics import NAMESPACE, Metrics
from cache.compose import Source
from cache.hints import HintResult

# Requests take about a millisecond: resolve the range the goal (p99 <= 5 ms) is about.
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
)  # fmt: skip
SOURCES: tuple[str, ...] = get_args(Source)
OUTCOMES = ("ok", "bad_request", "unauthorized", "timeout", "redis", "internal")
FALLBACKS = ("popular", "static", "none_available")
ERRORS = ("timeout", "redis", "internal", "corrupt")
# Each logged list counts once (cache/exposures.py says what each outcome means).
EXPOSURE_OUTCOMES = ("sent", "buffer_full", "kafka_unavailable", "invalid", "shutdown")
# POST /v1/hint-clicks: 202, 422, 401, 503 while Kafka fails, 503 while click logging is off.
CLICK_OUTCOMES = ("accepted", "bad_request", "unauthorized", "kafka_unavailable", "off")


class _Latency:
    """One histogram series: bucket counts (not cumulative), count and sum."""

    __slots__ = ("buckets", "total")

    def __init__(self) -> None:
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds

    def cumulative(self) -> list[tuple[str, float]]:
        out, running = [], 0
        for bound, count in zip((*LATENCY_BUCKETS, float("inf")), self.buckets, strict=True):
            running += count
            out.append(("+Inf" if bound == float("inf") else str(bound), float(running)))
        return out


class ServeMetrics(Collector):
    """Counts of one API process, exposed through ``metrics``' registry."""

    def __init__(self, metrics: Metrics) -> None:
        self.requests = dict.fromkeys(OUTCOMES, 0)
        self.hits = dict.fromkeys(SOURCES, 0)
        self.fallbacks = dict.fromkeys(FALLBACKS, 0)
        self.errors = dict.fromkeys(ERRORS, 0)
        self.latency = {outcome: _Latency() for outcome in OUTCOMES}
        self.exposures = dict.fromkeys(EXPOSURE_OUTCOMES, 0)
        self.clicks = dict.fromkeys(CLICK_OUTCOMES, 0)
        # the exposure log's buffer depth, when exposures are logged (set by cache.api)
        self.exposure_backlog: Callable[[], int] | None = None
        metrics.registry.register(self)

    def served(self, result: HintResult, started: float) -> None:
        self.requests["ok"] += 1
        hits, sources = self.hits, set()
        for hint in result.hints:
            if hint.source not in sources:
                sources.add(hint.source)
                hits[hint.source] += 1
        if result.fallback is not None:
            self.fallbacks[result.fallback] += 1
        elif not result.hints:
            self.fallbacks["none_available"] += 1
        if result.corrupt:
            self.errors["corrupt"] += 1
        self.latency["ok"].observe(time.perf_counter() - started)

    def unauthorized(self) -> None:
        self.requests["unauthorized"] += 1

    def failed(self, kind: str, started: float | None) -> None:
        self.requests[kind] += 1
        if kind != "bad_request":
            self.errors[kind] += 1
        if started is not None:
            self.latency[kind].observe(time.perf_counter() - started)

    def collect(self) -> Iterator[Metric]:
        def counter(name: str, doc: str, label: str, values: dict[str, int]) -> Metric:
            family = CounterMetricFamily(f"{NAMESPACE}_{name}", doc, labels=[label])
            for key, value in values.items():
                family.add_metric([key], value)
            return family

        yield counter("serve_requests", "hint requests by outcome", "outcome", self.requests)
        yield counter("serve_hits", "responses each source contributed to", "source", self.hits)
        yield counter("serve_fallbacks", "responses made of a fallback", "kind", self.fallbacks)
        yield counter("serve_errors", "failed or degraded requests", "kind", self.errors)
        yield counter(
            "serve_exposures", "served lists logged to Kafka, by outcome", "outcome", self.exposures
        )
        yield counter("serve_clicks", "POST /v1/hint-clicks by outcome", "outcome", self.clicks)
        if self.exposure_backlog is not None:
            yield GaugeMetricFamily(
                f"{NAMESPACE}_serve_exposure_buffer",
                "exposures waiting in memory for the sender",
                value=self.exposure_backlog(),
            )
        yield CounterMetricFamily(
            f"{NAMESPACE}_log_write_errors",
            "log lines dropped: the stream refused them (full disk, closed or broken pipe) "
            "or they could not be rendered",
            value=write_errors(),
        )
        latency = HistogramMetricFamily(
            f"{NAMESPACE}_serve_request_seconds",
            "hint requests: time in the handler, by outcome",
            labels=["outcome"],
        )
        for outcome, series in self.latency.items():
            latency.add_metric([outcome], series.cumulative(), series.total)
        yield latency
