"""The metrics registry helper and the one logging setup."""

from __future__ import annotations

import logging
import urllib.request
from collections.abc import Iterator

import orjson
import pytest
import structlog

from aigq.dev.probe import free_port
from aigq.logging import configure_logging, get_logger
from aigq.metrics import Metrics


def test_metrics_are_get_or_create_and_namespaced() -> None:
    metrics = Metrics()
    counter = metrics.counter("events_total", "events seen", ["kind"])
    assert metrics.counter("events_total", "again") is counter
    counter.labels(kind="search").inc(3)
    metrics.histogram("latency_seconds", "latency", buckets=(0.1, 1.0)).observe(0.5)
    text = metrics.exposition().decode()
    assert 'aigq_events_total{kind="search"} 3.0' in text
    assert 'aigq_latency_seconds_bucket{le="1.0"} 1.0' in text


def test_two_registries_never_collide_and_kinds_cannot_change() -> None:
    a, b = Metrics(), Metrics()
    a.gauge("lag", "lag").set(5)
    b.gauge("lag", "lag").set(7)
    assert b"aigq_lag 5.0" in a.exposition()
    assert b"aigq_lag 7.0" in b.exposition()
    with pytest.raises(ValueError, match="already exists as a Gauge"):
        a.counter("lag", "lag")


def test_metrics_are_served_on_loopback() -> None:
    metrics = Metrics()
    metrics.counter("served_total", "x").inc()
    port = free_port()
    metrics.serve(port)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert b"aigq_served_total 1.0" in response.read()


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """configure_logging points the root logger at this test's captured stderr: undo that."""
    handlers, level = logging.getLogger().handlers[:], logging.getLogger().level
    yield
    structlog.reset_defaults()
    logging.getLogger().handlers[:] = handlers
    logging.getLogger().setLevel(level)


@pytest.mark.usefixtures("restore_logging")
def test_json_logs_from_structlog_and_stdlib(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("DEBUG", json=True)
    get_logger("test").info("replayed", events=3)
    logging.getLogger("aiokafka").warning("rebalance %s", "now")
    logging.getLogger("aiokafka").info("chatter")  # third-party INFO is kept quiet
    lines = [orjson.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(x["event"], x["level"]) for x in lines] == [
        ("replayed", "info"),
        ("rebalance now", "warning"),
    ]
    assert lines[0]["events"] == 3
    assert lines[0]["timestamp"].endswith("Z")


def test_unknown_log_level() -> None:
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging("LOUD")
