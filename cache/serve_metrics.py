"""The read API's Prometheus metrics (names under ``aigq_serve_``)."""

from __future__ import annotations

import time

from aigq.metrics import Metrics
from cache.hints import HintResult

# Requests take about a millisecond: resolve the range the goal (p99 <= 5 ms) is about.
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
)  # fmt: skip
SOURCES = ("u2q", "x2q", "popular")


class ServeMetrics:
    """Pre-bound children, so a request touches no label lookup."""

    def __init__(self, metrics: Metrics) -> None:
        self.latency = metrics.histogram(
            "serve_request_seconds",
            "hint requests: time in the handler, by outcome",
            ["outcome"],
            buckets=LATENCY_BUCKETS,
        )
        requests = metrics.counter("serve_requests", "hint requests by outcome", ["outcome"])
        hits = metrics.counter(
            "serve_hits", "hint responses each source contributed to", ["source"]
        )
        fallbacks = metrics.counter("serve_fallbacks", "responses made of a fallback", ["kind"])
        errors = metrics.counter("serve_errors", "failed or degraded requests", ["kind"])
        self._ok = requests.labels("ok")
        self._ok_latency = self.latency.labels("ok")
        self._hits = {source: hits.labels(source) for source in SOURCES}
        self._fallbacks = {kind: fallbacks.labels(kind) for kind in ("popular", "static")}
        self._empty = fallbacks.labels("none_available")
        self._corrupt = errors.labels("corrupt")
        self.unauthorized = requests.labels("unauthorized")
        self._failed = {
            kind: (requests.labels(kind), errors.labels(kind), self.latency.labels(kind))
            for kind in ("timeout", "redis", "bad_request", "internal")
        }

    def served(self, result: HintResult, started: float) -> None:
        self._ok.inc()
        for source in {hint.source for hint in result.hints}:
            self._hits[source].inc()
        if result.fallback is not None:
            self._fallbacks[result.fallback].inc()
        elif not result.hints:
            self._empty.inc()
        if result.corrupt:
            self._corrupt.inc()
        self._ok_latency.observe(time.perf_counter() - started)

    def failed(self, kind: str, started: float | None) -> None:
        requests, errors, latency = self._failed[kind]
        requests.inc()
        if kind != "bad_request":
            errors.inc()
        if started is not None:
            latency.observe(time.perf_counter() - started)
