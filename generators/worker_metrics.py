"""The generator worker's Prometheus metrics (``aigq_generate_*``), in one place."""

from __future__ import annotations

from aigq.metrics import Metrics

# Freshness spans model time (seconds on a CPU) and queueing: buckets from 10 ms to 10 min.
_FRESHNESS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class WorkerMetrics:
    def __init__(self, metrics: Metrics) -> None:
        c, h = metrics.counter, metrics.histogram
        self.requests = c("generate_requests_total", "regeneration requests consumed")
        self.superseded = c(
            "generate_superseded_total",
            "requests given no model call, by reason: newer_pending (a newer request of the "
            "user came in: pending or being generated), cached (the cache holds a run at an "
            "equal or newer watermark and version)",
            labels=("reason",),
        )
        self.written = c("generate_written_total", "runs written to the u2q cache")
        self.stale = c("generate_stale_total", "runs the cache refused: a newer version was there")
        self.malformed = c("generate_malformed_total", "outputs with no valid query (not written)")
        self.dead_letters = c(
            "generate_dead_letters_total",
            "records dead-lettered, by kind (generators.requests.LetterKind)",
            labels=("reason",),
        )
        self.retries = c("generate_retries_total", "retried backend or Redis calls")
        self.commit_failures = c(
            "generate_commit_failures_total",
            "offset commits the group refused (rebalance, broker restart): redone, not lost",
        )
        self.paused = metrics.gauge("generate_paused", "1 while waiting for a backend or Redis")
        self.capacity = metrics.gauge(
            "generate_capacity", "lists per busy second, measured (published to the budget)"
        )
        self.backlog = metrics.gauge(
            "generate_backlog", "requests pending, being generated or left in the partitions"
        )
        self.budget_errors = c("generate_budget_errors_total", "capacity publishes that failed")
        self.pending = metrics.gauge(
            "generate_pending", "requests read and waiting for a generation slot (one per user)"
        )
        self.dropped = metrics.gauge(
            "generate_queries_dropped",
            "generated queries output validation dropped since the start, by reason "
            "(invalid, duplicate, unsafe: aigq.safety)",
            ["reason"],
        )
        self.freshness = h(
            "generate_freshness_seconds",
            "the triggering behaviour's ingest time (else its event time) to the u2q cache write",
            buckets=_FRESHNESS_BUCKETS,
        )
        self.request_to_cache = h(
            "generate_request_to_cache_seconds",
            "regeneration request emitted to the u2q cache write",
            buckets=_FRESHNESS_BUCKETS,
        )
        self.model_seconds = h(
            "generate_model_seconds", "backend time per micro-batch", buckets=_FRESHNESS_BUCKETS
        )
        self.reloads = c(
            "generate_reloads_total",
            "model announcements read (generators.reload), by outcome: swapped, current (already "
            "served), ignored (another kind or name, or older than the one applied), "
            "undecodable, missing (no such version here), unsupported (the backend cannot "
            "swap), failed (the load failed: the current model stays)",
            labels=("outcome",),
        )
        self.reload_seconds = h(
            "generate_reload_seconds",
            "a swap: loading the new model and switching to it",
            buckets=_FRESHNESS_BUCKETS,
        )
        self.model_version = metrics.gauge(
            "generate_model_version", "1 for the model version being served", ["version"]
        )
