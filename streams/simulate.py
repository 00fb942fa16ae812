"""``aigq simulate``: simulated hint clicks on Kafka, for logs without hint feedback.

One consumer (group ``AIGQ_SIMULATOR_GROUP_ID``) reads ``<prefix>.hint_exposure`` and
``<prefix>.search``, feeds a :class:`~streams.simulator.ClickSimulator` and produces each click
it makes to ``<prefix>.hint_click`` (keyed by user). docs/simulator.md says what is simulated.

- **One clock.** Both kinds are timed by their **Kafka record timestamp**: a replayed log has
  event times in the past while exposures are stamped now, so the time a record entered Kafka
  is the one clock both share (a replay must then stamp records with the time of sending,
  ``AIGQ_REPLAY_TIMESTAMPS=now``). The records of one poll are fed in timestamp order; an
  exposure that still arrives after the search it preceded is handled by the simulator.
- **Undecodable records** (or a record of another kind on one of the topics) are counted and
  skipped: this is a simulator, it does not dead-letter.
- **At least once.** Offsets are committed after the clicks of what was read are acknowledged;
  a crash redoes from the last commit, and a click made twice carries the same ``event_id``
  (``sim:<request_id>``). The simulator's state is in memory: exposures pending at a restart
  are lost.
- **Partitions.** The range assignor gives one member the same partition numbers of both
  topics, so with equal partition counts (as ``aigq dev up`` makes them) a user's exposures and
  searches meet in one process.

Pending exposures are expired about once a second against the newest record time seen (never
ahead of the wall clock). Counts are served as ``aigq_simulate_<what>_total``.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from aigq.codec import decode, encode
from aigq.errors import EventError, ServiceError
from aigq.events import HintClickEvent, HintExposureEvent, SearchEvent
from aigq.logging import get_logger
from aigq.metrics import Metrics
from aigq.settings import KafkaSettings, TopicSettings
from streams.simulator import COUNT_KEYS, ClickSimulator, SimulatorSettings

log = get_logger(__name__)

# What the process counts beside the simulator's outcomes.
PROCESS_KEYS = ("undecodable", "wrong_type", "commit_failures")
EXPIRE_EVERY_S = 1.0
POLL_MS = 500  # stop() is noticed within this


def _now_ms() -> int:
    return int(time.time() * 1000)


class Simulate:
    """The consumer loop around a :class:`ClickSimulator`; see the module doc."""

    def __init__(
        self,
        kafka: KafkaSettings,
        topics: TopicSettings,
        settings: SimulatorSettings,
        metrics: Metrics | None = None,
    ) -> None:
        self.kafka, self.topics, self.settings = kafka, topics, settings
        self.metrics = metrics or Metrics()
        self.simulator = ClickSimulator(settings, settings.max_users)
        self.stopping = asyncio.Event()
        self.process_counts: Counter[str] = Counter()
        self._counters = {
            key: self.metrics.counter(f"simulate_{key}", f"aigq simulate: {key.replace('_', ' ')}")
            for key in (*COUNT_KEYS, *PROCESS_KEYS)
        }
        self._published: Counter[str] = Counter()
        self._newest_ms = 0  # the newest record timestamp seen: the clock of expiry
        self._expired_at = 0.0

    @property
    def counts(self) -> Counter[str]:
        """The simulator's outcomes and the process's own counts, together."""
        return self.simulator.counts + self.process_counts

    def stop(self) -> None:
        self.stopping.set()

    async def run(self, on_batch: Callable[[Simulate], None] | None = None) -> Counter[str]:
        """Consume until :meth:`stop`; returns the counts (also logged)."""
        consumer = AIOKafkaConsumer(
            **self.kafka.aiokafka_config(),
            group_id=self.settings.group_id,
            enable_auto_commit=False,
            auto_offset_reset=self.settings.auto_offset_reset,
            fetch_max_wait_ms=self.kafka.fetch_max_wait_ms,
            partition_assignment_strategy=(RangePartitionAssignor,),
        )
        consumer.subscribe([self.topics.name("hint_exposure"), self.topics.name("search")])
        producer = AIOKafkaProducer(
            **self.kafka.aiokafka_config(), enable_idempotence=False, linger_ms=5
        )
        try:
            await consumer.start()
            await producer.start()
        except KafkaError as exc:
            await consumer.stop()
            await producer.stop()
            raise ServiceError(f"Kafka at {self.kafka.bootstrap_servers}: {exc!r}") from exc
        try:
            while not self.stopping.is_set():
                got = await consumer.getmany(timeout_ms=POLL_MS)
                await self._batch(got, producer)
                await self._commit(consumer, got)
                self._expire()
                self._publish()
                if on_batch is not None:
                    on_batch(self)
        finally:
            await consumer.stop()
            await producer.stop()
            self._publish()
            log.info("simulate stopped", pending=self.simulator.pending, **dict(self.counts))
        return self.counts

    async def _batch(
        self, got: dict[TopicPartition, list[Any]], producer: AIOKafkaProducer
    ) -> None:
        """Feed one poll's records in timestamp order; wait until its clicks are acknowledged."""
        sends = []
        for record in sorted(_records(got), key=lambda r: r.timestamp):
            click = self._feed(record)
            if click is not None:
                topic, value = self.topics.name("hint_click"), encode(click)
                sends.append(await producer.send(topic, value, key=click.user_id.encode()))
        try:
            await asyncio.gather(*sends)
        except KafkaError as exc:  # nothing of this poll is committed: redone after a restart
            raise ServiceError(f"a click was not acknowledged by Kafka: {exc!r}") from exc

    def _feed(self, record: Any) -> HintClickEvent | None:
        at_ms = int(record.timestamp)
        self._newest_ms = max(self._newest_ms, at_ms)
        try:
            event = decode(record.value or b"")
        except EventError:
            self.process_counts["undecodable"] += 1
            return None
        if record.topic == self.topics.name("hint_exposure") and isinstance(
            event, HintExposureEvent
        ):
            return self.simulator.on_exposure(event, at_ms)
        if record.topic == self.topics.name("search") and isinstance(event, SearchEvent):
            return self.simulator.on_search(event.user_id, event.query, at_ms)
        self.process_counts["wrong_type"] += 1
        return None

    async def _commit(
        self, consumer: AIOKafkaConsumer, got: dict[TopicPartition, list[Any]]
    ) -> None:
        offsets = {tp: records[-1].offset + 1 for tp, records in got.items() if records}
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except KafkaError as exc:  # a rebalance: the new owner redoes from the last commit
            self.process_counts["commit_failures"] += 1
            log.warning("offset commit failed; the records are redone", error=repr(exc))

    def _expire(self) -> None:
        now = time.monotonic()
        if now - self._expired_at < EXPIRE_EVERY_S or not self._newest_ms:
            return
        self._expired_at = now
        self.simulator.expire(min(self._newest_ms, _now_ms()))

    def _publish(self) -> None:
        counts = self.counts
        for key, counter in self._counters.items():
            step = counts[key] - self._published[key]
            if step > 0:
                counter.inc(step)
                self._published[key] = counts[key]


def _records(got: dict[TopicPartition, list[Any]]) -> Iterable[Any]:
    for records in got.values():
        yield from records
