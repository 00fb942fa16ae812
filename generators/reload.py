"""The model watcher: a generator picks up an announced model version without a restart.

A trainer publishes a version in the registry (:mod:`aigq.registry`) and announces it on
``<prefix>.models`` (:mod:`generators.announce`); ``aigq model rollback`` announces an earlier
one the same way. Beside the worker's loop (started and stopped by
:meth:`generators.worker.GeneratorWorker.run`, on unless ``AIGQ_GENERATE_RELOAD=false``) this
task reads that topic and swaps the backend's model (:meth:`Backend.swap`):

- it reads every partition, assigned (no consumer group: every generator sees every record);
- at start it first reads the newest announcement already on the topic, so that one made
  between the generator's start-up resolve and the watcher's start is not missed, and applies
  it if it differs from the version being served; then it follows the topic;
- only announcements of kind ``generator`` for ``AIGQ_GENERATE_RELOAD_NAME`` count; the version
  is resolved as ``name@version`` in this machine's registry, else the announced path when that
  is a folder here;
- an undecodable record, a version not found, a backend that cannot swap and a load that fails
  are counted (``aigq_generate_reloads_total{outcome}``) and logged, and the current model
  stays. ``aigq_generate_model_version{version}`` is 1 for the version being served.

A reload never stops generation: the new model is loaded beside the current one and switched
to between batches (each list names the version that generated it), and an error here (Kafka
gone, a bug) is logged and the watcher starts over after a pause.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from pydantic import ValidationError

from aigq.errors import RegistryError
from aigq.events import ModelAnnouncement
from aigq.logging import get_logger
from aigq.registry import Registry
from aigq.settings import KafkaSettings, TopicSettings
from generators.backends import Backend, ReloadUnsupported
from generators.settings import GeneratorSettings
from generators.worker_metrics import WorkerMetrics

log = get_logger(__name__)

Outcome = Literal[
    "swapped", "current", "ignored", "undecodable", "missing", "unsupported", "failed"
]
RETRY_S = 5.0  # after the watcher failed (Kafka unreachable), and while the topic is missing
CATCH_UP_S = 30.0  # the newest record of each partition is read within this, or skipped


def decide(announcement: ModelAnnouncement, name: str, current: str) -> Outcome | None:
    """None when ``announcement`` is to be applied by a generator serving registry ``name`` at
    version ``current`` (a tag, ``name@version``); otherwise the outcome that says why not."""
    if announcement.kind != "generator" or announcement.name != name:
        return "ignored"
    if announcement.tag == current:
        return "current"
    return None


def newest(announcements: Iterable[ModelAnnouncement], name: str) -> ModelAnnouncement | None:
    """Of the generator announcements for ``name``, the one announced last."""
    mine = [a for a in announcements if a.kind == "generator" and a.name == name]
    return max(mine, key=lambda a: a.ts, default=None)


def locate(announcement: ModelAnnouncement, registry: Registry) -> Path | None:
    """The announced version's folder here: ``name@version`` in ``registry``, else the
    announced path when it is a folder on this machine, else None."""
    try:
        return registry.get(announcement.name, announcement.version).path
    except RegistryError:
        path = Path(announcement.path) if announcement.path else None
        return path if path is not None and path.is_dir() else None


def decode(value: bytes | None) -> ModelAnnouncement | None:
    """The announcement a record holds, or None when it holds none."""
    if value is None:
        return None
    try:
        return ModelAnnouncement.model_validate_json(value)
    except ValidationError:
        return None


class ModelWatcher:
    """Follows ``<prefix>.models`` and swaps ``backend``'s model (see the module doc)."""

    def __init__(
        self,
        kafka: KafkaSettings,
        topics: TopicSettings,
        settings: GeneratorSettings,
        backend: Backend,
        metrics: WorkerMetrics,
        registry: Registry | None = None,
    ) -> None:
        self.kafka, self.topics, self.settings = kafka, topics, settings
        self.backend, self._m = backend, metrics
        self.registry = registry  # None: the registry at AIGQ_MODEL_REGISTRY, read when used
        self.applied: list[ModelAnnouncement] = []  # swapped to, in order
        self.following = False  # caught up with the topic: each new record is applied as read
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Run beside the caller's loop; nothing when hot reload is off."""
        self._m.model_version.labels(version=self.backend.model_version).set(1)
        if self.settings.reload and self._task is None:
            self._task = asyncio.create_task(self.run(), name="aigq-model-watcher")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def run(self) -> None:
        """Watch until cancelled; whatever fails is logged and the watch starts over."""
        while True:
            try:
                await self._watch()
            except Exception as exc:  # noqa: BLE001 (a reload must never stop generation)
                log.warning("model watcher failed; starting over", error=repr(exc))
            await asyncio.sleep(RETRY_S)

    async def _watch(self) -> None:
        consumer = AIOKafkaConsumer(
            **self.kafka.aiokafka_config(), group_id=None, enable_auto_commit=False
        )
        await consumer.start()
        try:
            parts = await self._partitions(consumer)
            consumer.assign(parts)
            latest = newest(await self._catch_up(consumer, parts), self.settings.reload_name)
            if latest is not None:
                await self.apply(latest)
            self.following = True
            while True:
                got = await consumer.getmany(timeout_ms=1_000)
                for records in got.values():
                    for record in records:
                        announcement = decode(record.value)
                        if announcement is None:
                            self._undecodable(record.partition, record.offset)
                        else:
                            await self.apply(announcement)
        finally:
            self.following = False
            await consumer.stop()

    async def _partitions(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        """The topic's partitions; waits while the topic does not exist (yet)."""
        topic = self.topics.name("models")
        while True:
            await consumer.topics()  # refreshes the metadata of every topic
            found = consumer.partitions_for_topic(topic)
            if found:
                return [TopicPartition(topic, p) for p in sorted(found)]
            log.warning("no model topic yet: hot reload waits for it", topic=topic)
            await asyncio.sleep(RETRY_S)

    async def _catch_up(
        self, consumer: AIOKafkaConsumer, parts: list[TopicPartition]
    ) -> list[ModelAnnouncement]:
        """The last announcement of each partition (and whatever came in after it)."""
        begins = await consumer.beginning_offsets(parts)
        ends = await consumer.end_offsets(parts)
        waiting: dict[TopicPartition, int] = {}
        for tp in parts:
            last = ends[tp] - 1
            consumer.seek(tp, max(last, begins[tp]))
            if last >= begins[tp]:
                waiting[tp] = last
        found: list[ModelAnnouncement] = []
        deadline = time.monotonic() + CATCH_UP_S
        while waiting and time.monotonic() < deadline:
            got = await consumer.getmany(timeout_ms=500)
            for tp, records in got.items():
                for record in records:
                    announcement = decode(record.value)
                    if announcement is None:
                        self._undecodable(record.partition, record.offset)
                    else:
                        found.append(announcement)
                    if record.offset >= waiting.get(tp, math.inf):
                        del waiting[tp]
        return found

    def _undecodable(self, partition: int, offset: int) -> None:
        self._m.reloads.labels(outcome="undecodable").inc()
        log.warning("not a model announcement", partition=partition, offset=offset)

    async def apply(self, announcement: ModelAnnouncement) -> Outcome:
        """Swap to the announced version if it is for this generator; counted, never raised."""
        current = self.backend.model_version
        outcome = decide(announcement, self.settings.reload_name, current)
        if outcome is None:
            outcome = await self._swap(announcement, current)
        self._m.reloads.labels(outcome=outcome).inc()
        return outcome

    async def _swap(self, announcement: ModelAnnouncement, current: str) -> Outcome:
        tag = announcement.tag
        path = locate(announcement, self.registry or Registry())
        if path is None:
            log.error("announced model not found here", version=tag, path=announcement.path)
            return "missing"
        started = time.perf_counter()
        try:
            await self.backend.swap(path, tag, announcement.adapter)
        except ReloadUnsupported as exc:
            log.error("the backend cannot swap models", version=tag, error=str(exc))
            return "unsupported"
        except Exception as exc:  # noqa: BLE001 (ReloadFailed, or anything: the model stays)
            log.error("model swap failed; the current one stays", version=tag, error=repr(exc))
            return "failed"
        seconds = time.perf_counter() - started
        self._m.reload_seconds.observe(seconds)
        with contextlib.suppress(KeyError):
            self._m.model_version.remove(current)
        self._m.model_version.labels(version=tag).set(1)
        self.applied.append(announcement)
        log.info(
            "model swapped", version=tag, previous=current, reason=announcement.reason,
            seconds=round(seconds, 3),
        )  # fmt: skip
        return "swapped"
