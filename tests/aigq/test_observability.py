"""The metrics registry helper and the one logging setup."""

from __future__ import annotations

import io
import logging
import sys
import urllib.request
from collections.abc import Iterator

import orjson
import pytest
import structlog

from aigq.dev.probe import free_port
from aigq.logging import configure_logging, get_logger, write_errors
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
    raise_exceptions = logging.raiseExceptions
    yield
    structlog.reset_defaults()
    logging.getLogger().handlers[:] = handlers
    logging.getLogger().setLevel(level)
    logging.raiseExceptions = raise_exceptions


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


class RefusingStream(io.StringIO):
    """stderr on a full disk, a broken pipe: every write raises ``error``; tries are counted."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        raise self.error


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize(
    "error",
    [
        OSError(28, "No space left on device"),
        BrokenPipeError(32, "Broken pipe"),
        ValueError("I/O operation on closed file."),
    ],
)
def test_a_refused_write_is_dropped_and_counted_never_raised(
    monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    stream = RefusingStream(error)
    monkeypatch.setattr(sys, "stderr", stream)
    configure_logging("INFO", json=True)
    before = write_errors()
    get_logger("test").warning("hints_unavailable", error="down")  # does not raise
    get_logger("test").error("internal_error", exc_info=RuntimeError("boom"))
    logging.getLogger("uvicorn.error").warning("Exceeded concurrency limit.")
    assert write_errors() - before == 3
    assert stream.writes == 3  # one try per line: no retry, no traceback on the same stream
    assert logging.raiseExceptions is False


@pytest.mark.usefixtures("restore_logging")
def test_a_closed_stream_and_a_line_that_cannot_be_rendered_are_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Unprintable:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    configure_logging("INFO", json=True)
    before = write_errors()
    get_logger("test").info("odd", value=Unprintable())  # the JSON renderer raises
    logging.getLogger("aiokafka").warning("bad %d", "format")  # the formatter raises
    assert write_errors() - before == 2
    get_logger("test").info("fine")
    assert stream.getvalue().count("\n") == 1 and '"event": "fine"' in stream.getvalue()
    stream.close()
    get_logger("test").info("after close")
    logging.getLogger("aiokafka").warning("after close")
    assert write_errors() - before == 4


@pytest.mark.usefixtures("restore_logging")
def test_a_failed_flush_is_counted_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A buffered stream takes the line and fails when flushed (the disk filled up)."""

    class FailingFlush(io.StringIO):
        def flush(self) -> None:
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(sys, "stderr", FailingFlush())
    configure_logging("INFO", json=True)
    before = write_errors()
    get_logger("test").warning("one")
    logging.getLogger("aiokafka").warning("two")
    logging.getLogger().handlers[0].flush()  # what logging.shutdown does at exit
    assert write_errors() - before == 3
