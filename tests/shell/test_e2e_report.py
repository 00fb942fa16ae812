"""The end-to-end figures from plain records: stages, the blocked clock, hit rate, parsing."""

from __future__ import annotations

import math

import pytest

from aigq.codec import encode
from aigq.events import GeneratedQueries, RegenerationRequest
from aigq.stats import percentile
from shell.e2e.monitor import generated, metric_by_label, metric_sum, requested
from shell.e2e.report import (
    Generated,
    LagSample,
    Probe,
    blocked_clock,
    lag_summary,
    list_hit_rate,
    served_hit_rate,
    stages,
)
from shell.e2e.stack import CANARY_USER

T = 1_800_000_000_000


def _gen(ingest: int, created: int, received: int, generated_ms: int, model: float,
         blocked: float, written: bool = True) -> Generated:  # fmt: skip
    return Generated(
        "u", 1, written, ("q",), model, generated_ms, created, ingest, received, blocked
    )


def test_percentile_is_nearest_rank() -> None:
    values = list(range(1, 101))
    assert percentile(values, 0.5) == 50
    assert percentile(values, 0.99) == 99
    assert percentile(values, 1.0) == 100
    assert percentile([7.0], 0.99) == 7.0
    assert math.isnan(percentile([], 0.5))


def test_blocked_clock_interpolates_between_batch_stamps() -> None:
    clock = blocked_clock([
        _gen(T, T, T + 1_000, T + 2_000, 500, blocked=100),
        _gen(T, T, T + 3_000, T + 4_000, 500, blocked=1_100),
    ])  # fmt: skip
    assert clock(T) == 100  # before the first stamp: flat
    assert clock(T + 2_000) == pytest.approx(600)
    assert clock(T + 9_000) == 1_100


def test_stages_split_freshness_into_session_transit_queue_and_model() -> None:
    # An idle generator: took the request 20 ms after it was emitted, never blocked.
    idle = _gen(T, T + 100, T + 120, T + 1_130, model=1_000, blocked=0)
    # A busy one: blocked 4 s of the 5 s the second request spent in Kafka.
    busy = [
        _gen(T, T + 100, T + 150, T + 1_200, model=1_000, blocked=0),
        _gen(T, T + 100, T + 5_100, T + 6_200, model=1_000, blocked=4_000),
    ]
    one = stages([idle])
    assert one.freshness == [1_130]
    assert one.session == [100] and one.transit == [20] and one.generator == [1_010]
    assert one.model_wait == [0] and one.pipeline == [130]
    two = stages(busy)
    assert two.model_wait == [0, 4_000]  # emitted before the first stamp: all 4 s count
    assert two.pipeline == [200, 6_200 - 1_000 - 4_000]


def test_a_wait_for_the_budget_or_in_the_pending_set_is_waiting_for_the_model() -> None:
    # Fired 100 ms after ingest, emitted 2 s later (the budget), 300 ms in the pending set.
    run = Generated("u", 1, True, ("q",), 1_000, T + 3_500, T + 2_100, T, T + 2_150, 0.0,
                    queued_ms=300, fired_ms=T + 100)  # fmt: skip
    out = stages([run])
    assert out.session == [100]  # the worker's own latency
    assert out.model_wait == [2_000 + 300]
    assert out.pipeline == [3_500 - 1_000 - 2_300]


def test_stages_skip_unwritten_warmup_and_unstamped_runs() -> None:
    runs = [
        _gen(T, T + 1, T + 2, T + 3, 1, 0, written=False),
        _gen(T - 10_000, T - 9_000, T - 8_000, T - 7_000, 1, 0),
        Generated("u", 1, True, ("q",), 1.0, T + 3, T + 1, None, None),
    ]
    assert stages(runs, since_ms=T).freshness == []


def test_served_hit_rate_normalises_like_the_read_path() -> None:
    probes = [
        Probe("a", "Running  Shoes", T, ("trail", "running shoes"), 200, ("history", "u2q")),
        Probe("b", "weather", T, ("news",), 200),
        Probe("c", "maps", T, (), 200),
        Probe("d", "late", T, (*(f"q{i}" for i in range(10)), "late"), 200),
    ]
    hr = served_hit_rate(probes, k=10)
    assert (hr.searches, hr.hits, hr.served) == (4, 1, 3)
    assert hr.rate == 0.25
    assert hr.by_source == {"u2q": 1}


def test_the_generated_list_alone_is_the_newest_written_by_each_search() -> None:
    def written(user: str, at: int, queries: tuple[str, ...], ok: bool = True) -> Generated:
        return Generated(user, 1, ok, queries, 1.0, at, at, at, at)

    results = [
        written("a", T + 10, ("old",)),
        written("a", T + 20, ("new", "Running Shoes")),
        written("a", T + 25, ("refused",), ok=False),  # the cache kept a newer run
        written("b", T + 50, ("maps",)),
    ]
    probes = [
        Probe("a", "old", T + 15, (), 200),  # the first list: a hit
        Probe("a", "running  shoes", T + 30, (), 200),  # the second, normalised: a hit
        Probe("a", "refused", T + 30, (), 200),  # never in the cache
        Probe("b", "maps", T + 40, (), 200),  # its list came later
        Probe("c", "maps", T + 40, (), 200),  # no list
    ]
    hr = list_hit_rate(probes, results, k=10)
    assert (hr.searches, hr.hits, hr.served) == (5, 2, 3)
    assert list_hit_rate(probes, results, k=1).hits == 1  # "running shoes" is second


def test_metric_sum_adds_every_label_of_one_name() -> None:
    page = "\n".join([
        "# HELP aigq_generate_written_total runs written",
        "# TYPE aigq_generate_written_total counter",
        "aigq_generate_written_total 12.0",
        'aigq_stream_decisions_total{outcome="drift"} 3.0',
        'aigq_stream_decisions_total{outcome="stale"} 4.0',
        "aigq_stream_decisions_created 1.7e9",
    ])  # fmt: skip
    assert metric_sum(page, "aigq_generate_written_total") == 12
    assert metric_sum(page, "aigq_stream_decisions_total") == 7
    assert metric_sum(page, "aigq_missing_total") == 0
    assert metric_by_label(page, "aigq_stream_decisions_total", "outcome") == {
        "drift": 3.0, "stale": 4.0}  # fmt: skip


def test_records_read_back_without_the_canary() -> None:
    req = RegenerationRequest(
        user_id="u1", version=3, reason="drift", shift=0.7, event_ts=T - 9, created_ts=T,
        fingerprint="f", recent=((T - 9, "search", "shoes", ""),), profile=(("t:shoes", 1.0),),
        ingest_ts=T - 5,
    )  # fmt: skip
    canary = req.model_copy(update={"user_id": CANARY_USER})
    assert [(r.user_id, r.ingest_ms) for r in requested([encode(req), encode(canary)])] == [
        ("u1", T - 5)
    ]
    res = GeneratedQueries(
        user_id="u1", session_version=3, reason="drift", event_ts=T - 9, request_ts=T,
        generated_ts=T + 9, model_version="m", backend="b", queries=("a",), written=True,
        model_ms=12.5, received_ts=T + 2,
    )  # fmt: skip
    (one,) = generated([encode(res), encode(res.model_copy(update={"user_id": CANARY_USER}))])
    assert one.ingest_ms is None and one.blocked_ms is None and one.received_ms == T + 2


def test_lag_summary_is_the_largest_lag_seen() -> None:
    samples = [LagSample(1, 100, 40, 3), LagSample(2, 200, 10, 30)]
    assert lag_summary(samples) == (40, 30)
    assert lag_summary([]) == (0, 0)
