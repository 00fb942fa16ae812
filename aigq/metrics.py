"""Prometheus metrics: one registry per process, names under the ``aigq_`` namespace.

Components take a :class:`Metrics` object instead of touching prometheus-client's global
registry, so tests build a fresh one and two components in one process never collide.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)

NAMESPACE = "aigq"

M = TypeVar("M", Counter, Gauge, Histogram)


class Metrics:
    """A registry plus get-or-create helpers for counters, gauges and histograms."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._made: dict[str, Counter | Gauge | Histogram] = {}

    def counter(self, name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
        made = self._get(name, Counter)
        if made is None:
            made = Counter(name, doc, labels, namespace=NAMESPACE, registry=self.registry)
            self._made[name] = made
        return made

    def gauge(self, name: str, doc: str, labels: Sequence[str] = ()) -> Gauge:
        made = self._get(name, Gauge)
        if made is None:
            made = Gauge(name, doc, labels, namespace=NAMESPACE, registry=self.registry)
            self._made[name] = made
        return made

    def histogram(
        self,
        name: str,
        doc: str,
        labels: Sequence[str] = (),
        buckets: Sequence[float] = Histogram.DEFAULT_BUCKETS,
    ) -> Histogram:
        made = self._get(name, Histogram)
        if made is None:
            made = Histogram(
                name, doc, labels, namespace=NAMESPACE, registry=self.registry, buckets=buckets
            )
            self._made[name] = made
        return made

    def _get(self, name: str, kind: type[M]) -> M | None:
        made = self._made.get(name)
        if made is not None and not isinstance(made, kind):
            raise ValueError(f"metric {name!r} already exists as a {type(made).__name__}")
        return made

    def exposition(self) -> bytes:
        """The text format a Prometheus scrape returns."""
        return generate_latest(self.registry)

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        """Expose ``/metrics`` on ``host:port`` from a daemon thread."""
        start_http_server(port, addr=host, registry=self.registry)
