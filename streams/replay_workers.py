"""Replay with several producer processes.

kafka-python's ``send()`` is pure Python (~35 µs a record here) and its sender thread shares the
GIL, so one process tops out near 15k events/s. ``replay_with_workers`` starts ``workers``
processes; each reads the same deterministic source and sends only the users of its
:class:`~streams.replay.Shard`, so a user's events still go through one producer, in order,
and ``limit`` and pacing mean exactly what they mean for one process. One worker runs in this
process.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.sharedctypes import SynchronizedArray
from pathlib import Path

from aigq.datasets import SourceItem
from aigq.datasets.sources import open_source
from aigq.datasets.synthetic import SyntheticConfig
from aigq.errors import AigqError
from aigq.settings import KafkaSettings, TopicSettings
from streams.replay import KafkaSink, ReplayReport, ReplaySettings, Shard, replay


@dataclass(frozen=True)
class SourceSpec:
    """What to replay, in a form that can travel to a worker process."""

    name: str
    path: Path | None
    data_dir: Path
    synthetic: SyntheticConfig

    def open(self) -> Iterator[SourceItem]:
        return open_source(self.name, self.path, self.data_dir, self.synthetic)

    @property
    def stream(self) -> str:
        """The name of this source's event stream in event ids (``<stream>#<n>``): the same
        for every replay of the same data, so a second replay is recognised."""
        if self.name == "synthetic":
            return f"synthetic-{self.synthetic.seed}"
        return self.name if self.path is None else f"{self.name}-{self.path.name}"


@dataclass(frozen=True)
class ReplayJob:
    source: SourceSpec
    kafka: KafkaSettings
    settings: ReplaySettings
    topics: TopicSettings
    speed: float | None
    limit: int | None


def default_workers() -> int:
    """One producer per core, at most four (the broker needs CPU too)."""
    return max(1, min(4, os.cpu_count() or 1))


def replay_with_workers(
    job: ReplayJob, workers: int, on_progress: Callable[[int], None] | None = None
) -> tuple[ReplayReport, str | None]:
    """Run the job on ``workers`` processes; return the merged report and the first send error."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if workers == 1:
        return run_shard(job, Shard(), (lambda r: on_progress(r.events)) if on_progress else None)

    context = multiprocessing.get_context("spawn")  # no fork of a process that has threads
    sent = context.Array("q", workers, lock=False)  # one writer per slot: no lock needed
    results: multiprocessing.Queue[_Result] = context.Queue()
    processes = [
        context.Process(
            target=_work, args=(job, Shard(i, workers), sent, results), name=f"replay-{i}"
        )
        for i in range(workers)
    ]
    started = time.monotonic()
    for process in processes:
        process.start()
    got: dict[int, _Result] = {}
    try:
        while len(got) < workers:
            try:
                result = results.get(timeout=0.2)
                got[result.index] = result
            except queue.Empty:
                dead = [p.name for p in processes if p.exitcode not in (None, 0)]
                if dead:
                    raise AigqError(f"replay worker(s) {', '.join(dead)} died") from None
            if on_progress is not None:
                on_progress(sum(sent))
    finally:
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
    errors = [r.error for r in got.values() if r.error]
    if errors:
        raise AigqError(errors[0])
    merged = ReplayReport(elapsed_s=time.monotonic() - started)
    first_error: str | None = None
    for result in sorted(got.values(), key=lambda r: r.index):
        assert result.report is not None
        merged.produced.update(result.report.produced)
        merged.malformed += result.report.malformed
        merged.failed += result.report.failed
        if result.report.last_ts is not None:
            merged.last_ts = max(merged.last_ts or 0, result.report.last_ts)
        first_error = first_error or result.first_error
    return merged, first_error


@dataclass(frozen=True)
class _Result:
    index: int
    report: ReplayReport | None
    first_error: str | None = None  # the first unacknowledged send
    error: str | None = None  # the worker could not run at all


def run_shard(
    job: ReplayJob, shard: Shard, on_progress: Callable[[ReplayReport], None] | None = None
) -> tuple[ReplayReport, str | None]:
    """One producer's part of the job; the report and the first unacknowledged send, if any."""
    with KafkaSink(job.kafka, job.settings) as sink:
        report = replay(
            job.source.open(),
            sink,
            job.topics,
            job.speed,
            job.limit,
            on_progress=on_progress,
            progress_every=max(1, job.settings.progress_every // shard.count),
            shard=shard,
            event_time=job.settings.timestamps == "event",
            stream=job.source.stream,
        )
    report.failed = sink.failed
    return report, sink.first_error


def _work(
    job: ReplayJob,
    shard: Shard,
    sent: SynchronizedArray[int],
    results: multiprocessing.Queue[_Result],
) -> None:
    def progress(report: ReplayReport) -> None:
        sent[shard.index] = report.events

    try:
        report, first_error = run_shard(job, shard, progress)
        progress(report)
        results.put(_Result(shard.index, report, first_error))
    except AigqError as exc:
        results.put(_Result(shard.index, None, error=str(exc)))
