"""Read back what a run produced: the requests in ``<prefix>.regenerate``, the lists in
``<prefix>.results``, and the processes' own counters from their ``/metrics`` pages."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Iterator
from typing import TypeVar

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from aigq.events import GeneratedQueries, RegenerationRequest
from aigq.settings import KafkaSettings
from shell.e2e.report import Generated, Requested
from shell.e2e.stack import CANARY_USER

R = TypeVar("R", RegenerationRequest, GeneratedQueries)


def _samples(text: str, name: str) -> Iterator[tuple[dict[str, str], float]]:
    """Every sample of ``name`` in a Prometheus text page: its labels and value."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                yield sample.labels, sample.value


def metric_sum(text: str, name: str) -> float:
    """The sum of every sample of ``name`` (all labels) in a Prometheus text page."""
    return sum(value for _, value in _samples(text, name))


def metric_by_label(text: str, name: str, label: str) -> dict[str, float]:
    """The samples of ``name`` by the value of one of their labels, e.g. a counter's reasons."""
    out: dict[str, float] = {}
    for labels, value in _samples(text, name):
        key = labels.get(label, "")
        out[key] = out.get(key, 0.0) + value
    return out


def _records(values: Iterable[bytes], schema: type[R]) -> Iterator[R]:
    """The records, checked by their own schema, without the loop's start-up canary."""
    for value in values:
        record = schema.model_validate_json(value)
        if record.user_id != CANARY_USER:
            yield record


def requested(values: Iterable[bytes]) -> list[Requested]:
    return [
        Requested(r.user_id, r.reason, r.version, r.created_ts, r.ingest_ts)
        for r in _records(values, RegenerationRequest)
    ]


def generated(values: Iterable[bytes]) -> list[Generated]:
    return [
        Generated(
            r.user_id,
            r.session_version,
            r.written,
            r.queries,
            r.model_ms,
            r.generated_ts,
            r.request_ts,
            r.ingest_ts,
            r.received_ts,
            r.blocked_ms,
            r.queued_ms,
            r.fired_ts,
        )
        for r in _records(values, GeneratedQueries)
    ]


class TopicReader:
    """Every record of one topic from the start, read in the background (no consumer group)."""

    def __init__(self, kafka: KafkaSettings, topic: str) -> None:
        self.kafka, self.topic = kafka, topic
        self.values: list[bytes] = []
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(
            **self.kafka.aiokafka_config(), enable_auto_commit=False, auto_offset_reset="earliest"
        )
        await consumer.start()
        partitions = consumer.partitions_for_topic(self.topic) or set()
        if not partitions:
            await consumer.stop()
            raise RuntimeError(f"topic {self.topic} has no partitions")
        consumer.assign([TopicPartition(self.topic, p) for p in sorted(partitions)])
        await consumer.seek_to_beginning()
        self._consumer = consumer
        self._task = asyncio.create_task(self._read(consumer))

    async def _read(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            got = await consumer.getmany(timeout_ms=200, max_records=10_000)
            for batch in got.values():
                self.values.extend(m.value for m in batch if m.value is not None)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()


async def read_all(kafka: KafkaSettings, topic: str, settle_s: float = 2.0) -> list[bytes]:
    """Every record of ``topic`` now: read until nothing new came for ``settle_s``."""
    reader = TopicReader(kafka, topic)
    await reader.start()
    try:
        seen = -1
        while seen != len(reader.values):
            seen = len(reader.values)
            await asyncio.sleep(settle_s)
    finally:
        await reader.stop()
    return reader.values
