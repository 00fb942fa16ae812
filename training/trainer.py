"""``aigq trainer``: the learning loop's process. Feedback in, better models out.

It consumes the behaviour and feedback topics (``<prefix>.search``, ``.click``,
``.hint_exposure``, ``.hint_click``) into the bounded feedback store
(:mod:`training.feedback`), committing its offsets only after the store is flushed, and runs a
cycle (:mod:`training.trainer_cycle`: retrain the CTR model, update the generation model,
judge each candidate, publish and announce the ones that are not worse) every
``AIGQ_TRAINER_EVERY_S`` (86,400: daily) after the last one *started*, remembered across
restarts in ``<state_dir>/last_cycle``. A cycle runs in a worker thread: consuming goes on.

``aigq trainer --once`` (a Kubernetes CronJob) reads what the topics hold now, up to their
end offsets at start, runs one cycle and exits: 0 when the cycle ran (whatever it decided),
1 when it failed. A failed or killed cycle publishes nothing it had not judged: the current
versions keep serving. Each cycle's report is ``<state_dir>/cycles/<started ms>.json``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from aigq.errors import ServiceError
from aigq.events import ModelAnnouncement
from aigq.logging import get_logger
from aigq.metrics import Metrics
from aigq.registry import Registry
from aigq.settings import KafkaSettings, TopicSettings
from training.feedback import FeedbackStore, Stored
from training.trainer_cycle import CycleReport, run_cycle
from training.trainer_settings import TrainerSettings

log = get_logger(__name__)
FEEDBACK_KINDS = ("search", "click", "hint_exposure", "hint_click")


class Trainer:
    """The consumer, the store and the schedule; :meth:`run` until :meth:`stop`."""

    def __init__(
        self,
        kafka: KafkaSettings,
        topics: TopicSettings,
        settings: TrainerSettings,
        registry: Registry | None = None,
        announce: Callable[[ModelAnnouncement], None] | None = None,
        metrics: Metrics | None = None,
        say: Callable[[str], None] = lambda line: log.info("trainer", line=line),
    ) -> None:
        self.kafka, self.topics, self.settings = kafka, topics, settings
        self.registry = registry or Registry()
        self.announce = announce or self._announce
        self.metrics = metrics or Metrics()
        self.say = say
        self.stopping = asyncio.Event()
        self.store = FeedbackStore(
            settings.state_dir / "feedback", settings.store_max_bytes, settings.segment_bytes
        )
        self.reports: list[CycleReport] = []
        self._stored = self.metrics.counter(
            "trainer_records_total", "feedback records stored, by topic kind", ["kind"]
        )
        self._cycles = self.metrics.counter(
            "trainer_cycles_total", "trainer cycles, by outcome", ["outcome"]
        )
        self._published = self.metrics.counter(
            "trainer_published_total", "model versions published and announced"
        )
        self._since_cycle = 0

    def _announce(self, announcement: ModelAnnouncement) -> None:
        from generators.announce import announce

        announce(self.kafka, self.topics, announcement)

    def stop(self) -> None:
        self.stopping.set()

    # --- the schedule ---------------------------------------------------------------------

    @property
    def _last_file(self) -> Path:
        return self.settings.state_dir / "last_cycle"

    def _last_cycle_s(self) -> float:
        try:
            return float(self._last_file.read_text())
        except (OSError, ValueError):
            return 0.0

    def _due(self) -> bool:
        s = self.settings
        return (
            time.time() - self._last_cycle_s() >= s.every_s
            and self._since_cycle >= s.min_new_events
        )

    # --- the loop -------------------------------------------------------------------------

    async def run(self, once: bool = False) -> CycleReport | None:
        """Consume and cycle until :meth:`stop` (``once``: catch up, one cycle, return it)."""
        consumer = AIOKafkaConsumer(
            **self.kafka.aiokafka_config(),
            group_id=self.settings.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=5_000,
            fetch_max_wait_ms=self.kafka.fetch_max_wait_ms,
        )
        consumer.subscribe([self.topics.name(kind) for kind in FEEDBACK_KINDS])  # type: ignore[arg-type]
        try:
            await consumer.start()
        except KafkaError as exc:
            raise ServiceError(f"Kafka at {self.kafka.bootstrap_servers}: {exc!r}") from exc
        cycle: asyncio.Task[CycleReport] | None = None
        try:
            if once:
                await self._catch_up(consumer)
                return await self._cycle()
            while not self.stopping.is_set():
                await self._poll(consumer)
                if cycle is not None and cycle.done():
                    cycle = None
                if cycle is None and self._due():
                    cycle = asyncio.create_task(self._cycle(raise_errors=False))
            if cycle is not None:
                self.say("stopping: waiting for the cycle in progress")
                await cycle
            return None
        finally:
            self.store.close()
            await consumer.stop()

    async def _poll(self, consumer: AIOKafkaConsumer) -> int:
        """One poll into the store; flush, then commit. Returns the records stored."""
        got = await consumer.getmany(timeout_ms=500, max_records=5_000)
        count = 0
        for tp, records in got.items():
            kind = tp.topic.rsplit(".", 1)[-1]
            for record in records:
                if record.value is None:
                    continue
                self.store.append(int(record.timestamp), record.value)
                count += 1
            self._stored.labels(kind).inc(len(records))
        if count:
            self.store.flush()
            try:
                await consumer.commit()
            except KafkaError as exc:  # stored already: redone after a restart, de-duplicated
                log.warning("commit_failed", error=repr(exc))
            self._since_cycle += count
        return count

    async def _catch_up(self, consumer: AIOKafkaConsumer, timeout_s: float = 120.0) -> None:
        """Consume until every partition is read up to its end offset at the start."""
        deadline = time.monotonic() + timeout_s
        while not consumer.assignment():
            await self._poll(consumer)
            if time.monotonic() > deadline:
                raise ServiceError("the trainer got no partitions of the feedback topics")
        parts: list[TopicPartition] = sorted(consumer.assignment())
        ends: dict[TopicPartition, int] = await consumer.end_offsets(parts)
        while not self.stopping.is_set():
            behind = [tp for tp in parts if await consumer.position(tp) < ends[tp]]
            if not behind:
                break
            await self._poll(consumer)
            if time.monotonic() > deadline:
                raise ServiceError(f"the trainer did not catch up in {timeout_s:.0f} s")
        self.say(f"caught up: {self.store.counts['stored']:,} records stored this run")

    async def _cycle(self, raise_errors: bool = True) -> CycleReport:
        """A cycle over a snapshot of the store, in a worker thread; its report is saved."""
        started = time.time()
        self._last_file.parent.mkdir(parents=True, exist_ok=True)
        self._last_file.write_text(f"{started:.3f}\n")
        self._since_cycle = 0
        self.store.flush()
        snapshot = self.store.snapshot()
        try:
            report = await asyncio.to_thread(self._run_cycle, snapshot)
        except Exception as exc:
            self._cycles.labels("failed").inc()
            log.error("cycle_failed", exc_info=exc)
            report = CycleReport(started_ts=int(started * 1000), error=repr(exc))
            self._save(report)
            if raise_errors:
                raise
            return report
        self._cycles.labels("done").inc()
        self._published.inc(len(report.announced))
        self._save(report)
        self.reports.append(report)
        return report

    def _run_cycle(self, snapshot: list[tuple[Path, int]]) -> CycleReport:
        stored: list[Stored] = list(self.store.read_snapshot(snapshot))
        return run_cycle(stored, self.settings, self.registry, self.announce, self.say)

    def _save(self, report: CycleReport) -> None:
        folder = self.settings.state_dir / "cycles"
        folder.mkdir(parents=True, exist_ok=True)
        body: dict[str, Any] = report.as_dict()
        (folder / f"{report.started_ts}.json").write_bytes(
            orjson.dumps(body, option=orjson.OPT_INDENT_2)
        )
