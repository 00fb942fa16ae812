"""The whole loop as ``aigq demo`` and ``aigq bench e2e`` run it: a throwaway broker, the real
Redis, the session worker, the generator on the real vLLM server and the read API, each its own
process; a synthetic slice replayed through it at a fixed rate, then everything stopped."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from aigq.dev.process import ManagedProcess
from aigq.events import SearchEvent
from aigq.redis_clients import open_redis
from aigq.settings import RedisSettings
from shell.e2e.run import load_slice, run_arm
from shell.e2e.stack import Loop, LoopConfig, ModelServer
from streams.triggers import REASONS

pytestmark = pytest.mark.integration


async def _keys(redis: RedisSettings, prefix: str) -> list[bytes]:
    client = open_redis(redis)
    try:
        return [key async for key in client.scan_iter(match=f"{prefix}*")]
    finally:
        await client.aclose()


def test_a_replayed_slice_goes_through_every_part_and_everything_stops(
    vllm_server: str, tiny_model: Path, redis_settings: RedisSettings, tmp_path: Path
) -> None:
    data = load_slice(tmp_path / "no-logs-here", limit=3_000, lookahead=500)
    assert data.source == "synthetic" and len(data.events) == 3_000
    model = ModelServer(tiny_model, "tiny@test", tmp_path, "vllm-http", url=vllm_server).start()
    prefix = f"t{uuid.uuid4().hex[:8]}"
    # Every probe must be answered 200: this checks the plumbing, not the read deadline, which
    # a 2-core machine running vLLM and the whole loop at once can miss by a stall (seen once
    # in CI: one read over 0.1 s); the latency is aigq bench serve's business.
    config = LoopConfig(
        tmp_path / "loop", prefix, redis_settings, partitions=2, max_tokens=24,
        hints_timeout_ms=2_000,
    )  # fmt: skip
    procs: list[ManagedProcess] = []
    pids: list[int | None] = []

    def inspect(loop: Loop) -> None:
        procs.extend(loop.procs.values())
        pids.extend(p.pid() for p in procs)

    arm = run_arm("test", config, model, data, rate=600, warmup_s=0, drain_timeout_s=120,
                  say=lambda line: None, inspect=inspect)  # fmt: skip

    # Every event sent was applied; every request was answered.
    assert arm.drive.failed == 0 and arm.events == 3_000
    assert arm.drive.applied == 3_000 and arm.drive.drained
    assert arm.requests and set(arm.reasons) <= set(REASONS)
    assert 0 < arm.regenerations_per_event < 1
    # The lists came from the model through the generator, with the timestamps freshness needs.
    written = [r for r in arm.results if r.written]
    assert written and all(r.queries for r in written)
    for r in written:
        assert r.ingest_ms is not None and r.received_ms is not None
        assert r.ingest_ms <= r.created_ms <= r.received_ms <= r.generated_ms
    assert len(arm.stages.freshness) == len(written)
    assert all(p >= 0 for p in arm.stages.pipeline)
    # One probe per search, each answered by the read API.
    searches = sum(isinstance(e, SearchEvent) for e in data.events)
    assert len(arm.drive.probes) + arm.drive.probe_errors == searches
    assert arm.drive.probe_errors == 0 and {p.status for p in arm.drive.probes} == {200}
    assert arm.hit_rate.served > 0  # later searches were served generated lists
    assert arm.drive.lag and arm.drive.lag[-1].session_lag == 0
    # Everything it started is stopped, and its Redis keys are gone.
    assert len(pids) == 3 and all(pids)
    assert all(p.pid() is None for p in procs)
    assert asyncio.run(_keys(redis_settings, f"{prefix}:")) == []
