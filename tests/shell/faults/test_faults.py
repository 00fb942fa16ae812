"""``aigq bench faults --short`` as CI runs it: each scenario on a loop of its own (throwaway
broker, the worker, the generator on the tiny model's vLLM server, the read API).

Each test first checks that the scenario ran (the suite's own sanity), then the MUST-be-true
figures: nothing lost, nothing counted twice, every invalid record dead-lettered, no process
crashed or refused to stop, and the scenario's own checks (its ``failures``). Scenarios that
meet a defect still open fail here with the verdict that names it (docs/faults.md).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from rich.console import Console

from aigq.settings import RedisSettings
from shell.e2e.stack import LoopConfig, ModelServer
from shell.faults.figures import Figures
from shell.faults.report import notes, table
from shell.faults.stage import Options
from shell.faults.suite import SCENARIOS, run_scenario

pytestmark = pytest.mark.integration

Run = Callable[[str], Figures]


@pytest.fixture(scope="module")
def model(
    vllm_server: str, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> ModelServer:
    state = tmp_path_factory.mktemp("faults-model")
    return ModelServer(tiny_model, "tiny@faults", state, "vllm-http", url=vllm_server)


@pytest.fixture
def run(model: ModelServer, redis_settings: RedisSettings, tmp_path: Path) -> Run:
    def run(name: str) -> Figures:
        base = LoopConfig(
            tmp_path, f"f{uuid.uuid4().hex[:8]}", redis_settings, partitions=2, max_tokens=24
        )
        figures = run_scenario(SCENARIOS[name], base, model, Options(short=True, kills=3), print)
        console = Console(width=160)
        console.print(table([figures], f"aigq bench faults --short --only {name}"))
        for line in notes([figures]):
            console.print(line, markup=False, highlight=False)
        return figures

    return run


def _ran(f: Figures) -> None:
    """The suite's sanity: the scenario ran to its end and its figures add up."""
    assert not f.skipped, f.skipped
    assert not any(x.startswith("the scenario broke") for x in f.failures), f.notes
    if f.applied is not None:
        assert f.applied + f.lost + f.dead_lettered >= f.events_sent - f.duplicated


def _must(f: Figures) -> None:
    """MUST be true for every scenario: the verdict is a pass."""
    assert f.lost == 0, f.verdict
    assert f.duplicated == 0, f.verdict
    assert f.crashed == [], f.verdict
    assert f.unstoppable == [], f.verdict
    assert f.failures == [], f.verdict
    assert f.passed


def test_worker_kill(run: Run) -> None:
    f = run("worker-kill")
    _ran(f)
    assert f.events_sent > 0
    _must(f)  # every event counted once through 3 SIGKILLs; each restart ready again


def test_redis_restart(run: Run) -> None:
    f = run("redis-restart")
    _ran(f)
    assert f.events_sent > 0 and f.requests_sent > 0
    _must(f)  # events all counted; every request answered; the API answers after the outage


def test_backend_down(run: Run) -> None:
    f = run("backend-down")
    _ran(f)
    _must(f)  # every request answered once the backend is back; SIGTERM stops it within 10 s


def test_broker_restart(run: Run) -> None:
    f = run("broker-restart")
    _ran(f)
    assert f.events_sent > 0
    _must(f)  # the reset log found, every event after it applied once; no process died


def test_poison(run: Run) -> None:
    f = run("poison")
    _ran(f)
    assert f.dead_lettered > 0
    _must(f)  # each poison record dead-lettered exactly where it was, the rest applied


def test_clock_skew(run: Run) -> None:
    f = run("clock-skew")
    _ran(f)
    assert f.dead_lettered > 0  # the times outside the schema's range
    _must(f)  # every event applied (2099 clamped), no request dated 2099


def test_slow_clients(run: Run) -> None:
    f = run("slow-clients")
    _ran(f)
    assert f.requests_sent > 0
    _must(f)  # every slow connection closed by the server; ordinary requests never failed
