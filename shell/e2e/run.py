"""One run of the loop ("an arm"): start it, drive a slice of a log through it, measure.

Used by ``aigq demo`` (one arm, then a look at a few users) and ``aigq bench e2e`` (the
default trigger policy and regenerate-on-every-event, on the same slice, side by side).
"""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from aigq.datasets.base import Malformed, SourceItem
from aigq.datasets.sources import open_source
from aigq.datasets.synthetic import SyntheticConfig
from aigq.errors import RegistryError
from aigq.events import Event, HintClickEvent, HintExposureEvent, SearchEvent
from shell.e2e.drive import DriveResult, Endpoints, drive, prepare
from shell.e2e.monitor import generated, read_all, requested
from shell.e2e.report import (
    Generated,
    HitRate,
    Requested,
    Stages,
    VersionCtr,
    list_hit_rate,
    reasons,
    served_ctr,
    served_hit_rate,
    stages,
)
from shell.e2e.stack import Loop, LoopConfig, ModelServer
from shell.e2e.x2q import PrebuiltIndex, install

MODEL_NAME = "aigq-direct"


@dataclass(frozen=True)
class Slice:
    """The events replayed, and each user's searches right after them (what comes next)."""

    source: str
    events: list[Event]
    next_searches: dict[str, list[str]]


def load_slice(
    data_dir: Path, limit: int, lookahead: int = 20_000, source: str | None = None
) -> Slice:
    """The first ``limit`` events of the AOL log (the synthetic shop when it is absent)."""
    name = source or ("aol" if (data_dir / "aol").is_dir() else "synthetic")
    items: Iterator[SourceItem] = iter(
        open_source(name, data_dir=data_dir, synthetic=SyntheticConfig(users=400, days=14))
    )
    events: list[Event] = []
    for item in items:
        if not isinstance(item, Malformed):
            events.append(item)
            if len(events) >= limit:
                break
    upcoming: dict[str, list[str]] = {}
    for item in itertools.islice(items, lookahead):
        if isinstance(item, SearchEvent):
            upcoming.setdefault(item.user_id, []).append(item.query)
    return Slice(name, events, upcoming)


def embedded_model(
    data_dir: Path, users: int, steps: int, say: Callable[[str], None]
) -> tuple[Path, str, float]:
    """The registry's latest ``aigq-direct``, else the trained default the repository carries
    (``models/aigq-direct``), else one trained now (IL-SFT, a few minutes on a CPU): its
    folder, ``name@version`` and the seconds spent training."""
    from aigq.registry import Registry
    from training import TrainingError

    registry = Registry()
    try:
        ref = registry.resolve(MODEL_NAME)
        return ref.path, ref.tag, 0.0
    except RegistryError:
        pass
    source = "aol" if (data_dir / "aol").is_dir() else "synthetic"
    say(f"no {MODEL_NAME} in {registry.root}: training one ({source}, {steps} steps)")
    argv = [
        sys.executable, "-m", "shell", "train", "sft", "--source", source,
        "--data-dir", str(data_dir), "--users", str(users), "--max-steps", str(steps),
    ]  # fmt: skip
    if source == "synthetic":
        argv += ["--cut", "2026-01-08"]
    started = time.monotonic()
    try:
        subprocess.run(argv, check=True)
    except subprocess.CalledProcessError as exc:
        raise TrainingError(f"training the demo's model failed (exit {exc.returncode})") from exc
    ref = registry.resolve(MODEL_NAME)
    return ref.path, ref.tag, time.monotonic() - started


@dataclass
class ArmResult:
    """What one arm measured (see :mod:`shell.e2e.report`)."""

    name: str
    config: LoopConfig
    rate: float
    drive: DriveResult
    requests: list[Requested]
    results: list[Generated]
    stages: Stages
    hit_rate: HitRate
    list_hit_rate: HitRate  # the generated lists alone
    reasons: Counter[str]
    started_s: float
    ctr: list[VersionCtr] = field(default_factory=list)
    """with ``config.feedback``: served CTR per model version (simulated clicks)"""

    @property
    def events(self) -> int:
        return self.drive.sent

    @property
    def regenerations_per_event(self) -> float:
        return len(self.requests) / self.events if self.events else 0.0


def run_arm(
    name: str,
    config: LoopConfig,
    model: ModelServer,
    data: Slice,
    rate: float,
    warmup_s: float = 5.0,
    drain_timeout_s: float = 120.0,
    say: Callable[[str], None] = print,
    inspect: Callable[[Loop], None] | None = None,
    x2q: PrebuiltIndex | None = None,
) -> ArmResult:
    """Start a loop, replay ``data`` at ``rate`` through it, read everything back, stop it.

    Freshness counts only behaviours ingested after ``warmup_s`` (the first seconds fill
    empty caches and warm the processes). ``inspect`` runs while the loop is still up. ``x2q``
    (:mod:`shell.e2e.x2q`) is published under the loop's prefix before anything is replayed.
    """
    started = time.monotonic()
    with Loop(config, model) as loop:
        ready_s = time.monotonic() - started
        say(f"{name}: loop ready in {ready_s:.1f} s (worker, generator, API; {model.name})")
        if x2q is not None:
            version = install(x2q, config.redis, loop.cache_prefix)
            say(f"{name}: x2q index {version} live ({len(x2q.entries):,} triggers)")
        outgoing = prepare(data.events, loop.topics)
        endpoints = Endpoints(loop.api_url, loop.worker_metrics_url, loop.generator_metrics_url)
        result = asyncio.run(
            drive(
                outgoing,
                loop.kafka,
                loop.topics,
                endpoints,
                rate,
                k=config.k,
                drain_timeout_s=drain_timeout_s,
                progress=lambda line: say(f"{name}: {line}"),
            )
        )
        if inspect is not None:
            inspect(loop)
        ctr = asyncio.run(read_ctr(loop)) if config.feedback else []
    reqs, gens = requested(result.requests), generated(result.results)
    since = result.started_ms + int(warmup_s * 1000)
    return ArmResult(
        name, config, rate, result, reqs, gens, stages(gens, since),
        served_hit_rate(result.probes, config.k),
        list_hit_rate(result.probes, gens, config.k), reasons(reqs), ready_s, ctr,
    )  # fmt: skip


async def read_ctr(loop: Loop) -> list[VersionCtr]:
    """Served CTR per model version from the loop's exposure and click topics."""
    exposures = await read_all(loop.kafka, loop.topics.name("hint_exposure"))
    clicks = await read_all(loop.kafka, loop.topics.name("hint_click"))
    return served_ctr(
        [HintExposureEvent.model_validate_json(v) for v in exposures],
        [HintClickEvent.model_validate_json(v) for v in clicks],
    )
