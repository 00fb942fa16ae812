"""The learning loop in the demo (``aigq demo --learn``): feedback, a trainer cycle, a reload.

On top of the loop of :mod:`shell.e2e.run`, the read API logs every list it serves
(``AIGQ_SERVE_LOG_EXPOSURES``) and the user simulator (``aigq simulate``,
:mod:`streams.simulator`) turns a user's next real search that matches a shown hint into a
hint click. The slice is replayed in two halves:

1. the first half; then ``aigq trainer --once`` (what a CronJob runs) reads the feedback
   topics, retrains the CTR model, fine-tunes the generation model on the Direct samples the
   clicks made, judges both candidates and publishes and announces what is not worse;
2. the generator, which follows ``<prefix>.models``, swaps the model in without a restart
   (the transformers backend); the second half is replayed on the new version.

The demo then reads the exposure and click topics and prints the served CTR per model version
(an exposure names the model of the u2q run its list was composed with). The models live in a
registry of the run's own (``AIGQ_MODEL_REGISTRY`` under the state folder), so the demo never
changes the user's.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from aiokafka import AIOKafkaProducer

from aigq.codec import encode
from aigq.events import GeneratedQueries, HintClickEvent, HintExposureEvent
from shell.e2e.drive import DriveResult, Endpoints, drive, prepare
from shell.e2e.monitor import TopicReader
from shell.e2e.report import VersionCtr, served_ctr
from shell.e2e.run import MODEL_NAME, Slice
from shell.e2e.stack import Loop, LoopConfig, ModelServer, canary_request


@dataclass
class LearnResult:
    """What ``aigq demo --learn`` measured."""

    phases: list[DriveResult] = field(default_factory=list)
    cycle: dict[str, object] = field(default_factory=dict)
    cycle_s: float = 0.0
    reload_s: float | None = None
    """from the end of the cycle to the first list the new version wrote (None: no reload)"""
    announced: list[str] = field(default_factory=list)
    ctr: list[VersionCtr] = field(default_factory=list)
    written_by_version: dict[str, int] = field(default_factory=dict)
    probe_status: Counter[str] = field(default_factory=Counter)
    """the read API's answers to the probes (one per search), by HTTP status"""


def run_learning(
    config: LoopConfig,
    model: ModelServer,
    data: Slice,
    rate: float,
    say: Callable[[str], None] = print,
) -> LearnResult:
    """Start a learning loop (``config.learn`` is set here), replay the two halves around
    one trainer cycle (module doc) and count what it served."""
    with Loop(replace(config, learn=True), model) as loop:
        return asyncio.run(_learn(loop, data, rate, say))


async def _learn(loop: Loop, data: Slice, rate: float, say: Callable[[str], None]) -> LearnResult:
    out = LearnResult()
    endpoints = Endpoints(loop.api_url, loop.worker_metrics_url, loop.generator_metrics_url)
    readers = {
        "hint_exposure": TopicReader(loop.kafka, loop.topics.name("hint_exposure")),
        "hint_click": TopicReader(loop.kafka, loop.topics.name("hint_click")),
        "results": TopicReader(loop.kafka, loop.topics.name("results")),
    }
    for reader in readers.values():
        await reader.start()
    half = len(data.events) // 2
    try:
        for number, events in enumerate((data.events[:half], data.events[half:]), 1):
            say(f"learn: replaying part {number} of 2 ({len(events):,} events)")

            def progress(line: str, n: int = number) -> None:
                say(f"part {n}: {line}")

            result = await drive(
                prepare(events, loop.topics), loop.kafka, loop.topics, endpoints, rate,
                k=loop.config.k, progress=progress,
            )  # fmt: skip
            out.phases.append(result)
            out.probe_status.update(str(p.status) for p in result.probes)
            out.probe_status["no answer"] += result.probe_errors
            if number == 1:
                await _cycle(loop, out, readers["results"], say)
        await asyncio.sleep(3.0)  # the last exposures and clicks reach their topics
    finally:
        for reader in readers.values():
            await reader.stop()
    exposures = [HintExposureEvent.model_validate_json(v) for v in readers["hint_exposure"].values]
    clicks = [HintClickEvent.model_validate_json(v) for v in readers["hint_click"].values]
    out.ctr = served_ctr(exposures, clicks)
    out.written_by_version = dict(Counter(versions(readers["results"].values)))
    return out


def versions(values: Iterable[bytes]) -> list[str]:
    """The model version of each results record (the canary's included)."""
    return [GeneratedQueries.model_validate_json(v).model_version for v in values]


async def _cycle(
    loop: Loop, out: LearnResult, results: TopicReader, say: Callable[[str], None]
) -> None:
    """``aigq trainer --once``, as a CronJob runs it; then wait until the generator writes a
    list with the generation model the trainer announced."""
    say("learn: aigq trainer --once (CTR model, IL-SFT and IL-GRPO on Direct samples, gates)")
    started = time.monotonic()
    env = {**loop.process_env(), "COLUMNS": "100"}  # its table, unwrapped, through a pipe
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shell", "trainer", "--once", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await proc.communicate()
    out.cycle_s = time.monotonic() - started
    for line in output.decode(errors="replace").splitlines():
        say(line)
    if proc.returncode != 0:
        say(f"learn: the trainer failed (exit {proc.returncode})")
        return
    reports = sorted((loop.config.state_dir / "trainer" / "cycles").glob("*.json"))
    if reports:
        out.cycle = json.loads(reports[-1].read_text())
        announced = out.cycle.get("announced")
        out.announced = [str(a) for a in announced] if isinstance(announced, list) else []
    wanted = [tag for tag in out.announced if tag.startswith(f"{MODEL_NAME}@")]
    if not wanted:
        return
    ended = time.monotonic()

    read, seen = 0, False  # results records looked at (the reader only appends); found yet

    def reloaded() -> bool:
        nonlocal read, seen
        fresh, read = results.values[read:], len(results.values)
        seen = seen or wanted[-1] in versions(fresh)
        return seen

    # A list names its model once a request comes after the swap: the canary user asks.
    producer = AIOKafkaProducer(**loop.kafka.aiokafka_config(), enable_idempotence=False)
    await producer.start()
    try:
        version = 1_000_000
        while not reloaded() and time.monotonic() - ended < 120:
            version += 1
            request = encode(canary_request(version))
            await producer.send_and_wait(loop.topics.name("regenerate"), request, key=b"canary")
            for _ in range(20):
                if reloaded():
                    break
                await asyncio.sleep(0.25)
    finally:
        await producer.stop()
    if reloaded():
        out.reload_s = time.monotonic() - ended
    say(f"learn: generator serving {wanted[-1]}: " + ("yes" if reloaded() else "not in 120 s"))
