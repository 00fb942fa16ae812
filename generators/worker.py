"""``aigq generate``: regeneration requests in, validated query lists into the u2q cache.

The loop (one consumer group; offsets committed by hand, never automatically):

1. take a **micro-batch** from ``<prefix>.regenerate``: up to ``batch_size`` requests, or what
   arrived within ``batch_wait_ms``;
2. hand it to a task, at most ``max_in_flight`` at once. While all slots are busy the
   partitions are *paused*: nothing piles up in memory (backpressure), and polling goes on so
   the group does not drop the worker;
3. the task builds the prompts, generates (timeout, retries with jittered backoff), writes
   the runs to Redis (compare-and-set on the session version: an older or replayed request
   is a no-op), logs every list to ``<prefix>.results`` and records freshness;
4. offsets are committed only up to the newest batch whose every earlier batch is done too.

If the backend (or Redis) stays down past the retries, the batch is **kept**: the worker
pauses the partitions, polls the backend's health with backoff, and carries on with the same
batch when it answers. Nothing is committed meanwhile, so even a crash loses no request.
Bad records go to the dead-letter topic with the reason; a batch the backend *refuses* is
retried one request at a time, so only the offending request is dead-lettered.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition
from redis.exceptions import RedisError

from aigq.codec import dead_letter, encode
from aigq.errors import ServiceError
from aigq.logging import get_logger
from aigq.metrics import Metrics
from aigq.retry import ExponentialBackoff
from aigq.settings import KafkaSettings, RedisSettings, TopicSettings
from cache.client import open_redis
from cache.u2q import U2QStore
from generators.backends import Backend, BackendRejected, BackendUnavailable, open_backend
from generators.requests import (
    Record,
    decode_requests,
    prompt_for,
    result_record,
    run_for,
)
from generators.settings import GeneratorSettings

log = get_logger(__name__)
T = TypeVar("T")
# Freshness spans model time (seconds on a CPU) and queueing: buckets from 10 ms to 10 min.
_FRESHNESS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


def _now_ms() -> int:
    return int(time.time() * 1000)


class GeneratorWorker:
    """The consumer loop around a backend and the u2q store; see the module doc."""

    def __init__(
        self,
        kafka: KafkaSettings,
        topics: TopicSettings,
        redis: RedisSettings,
        settings: GeneratorSettings,
        backend: Backend | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.kafka, self.topics, self.redis_settings, self.settings = kafka, topics, redis, settings
        self.backend = backend or open_backend(settings)
        self.metrics = metrics or Metrics()
        self.stopping = asyncio.Event()
        self.paused = False  # waiting for the backend or Redis to come back
        self.done = 0  # requests answered (written, stale or malformed)
        # Time spent unable to take requests (every slot busy, or a backend or Redis down):
        # stamped on each batch, so a reader can tell queueing for the model from transit.
        self.blocked_ms = 0.0
        self._slots = asyncio.Semaphore(settings.max_in_flight)
        self._health = ExponentialBackoff(settings.backoff_s, settings.backoff_max_s)
        self._m = _WorkerMetrics(self.metrics)

    # --- the loop -------------------------------------------------------------------------

    async def run(self, on_batch: Callable[[GeneratorWorker], None] | None = None) -> None:
        """Consume until :meth:`stop`; commits what is done before it returns."""
        s = self.settings
        consumer = AIOKafkaConsumer(
            self.topics.name("regenerate"),
            **self.kafka.aiokafka_config(),
            group_id=s.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=s.batch_size,
        )
        producer = AIOKafkaProducer(
            **self.kafka.aiokafka_config(), enable_idempotence=False, linger_ms=5
        )
        redis = open_redis(self.redis_settings)
        store = U2QStore(redis, prefix=s.cache_prefix, keep_runs=s.keep_runs, ttl_s=s.ttl_s)
        try:
            await consumer.start()
            await producer.start()
        except KafkaError as exc:
            await redis.aclose()
            raise ServiceError(f"Kafka at {self.kafka.bootstrap_servers}: {exc!r}") from exc
        pending: deque[tuple[dict[TopicPartition, int], asyncio.Task[None]]] = deque()
        try:
            while not self.stopping.is_set():
                await self._commit_done(consumer, pending)
                if self._slots.locked() or self.paused:
                    blocked = time.perf_counter()
                    consumer.pause(*consumer.assignment())
                    await consumer.getmany(timeout_ms=100)  # keeps the group membership alive
                    self.blocked_ms += (time.perf_counter() - blocked) * 1000
                    continue
                consumer.resume(*consumer.paused())
                records = await self._micro_batch(consumer)
                if not records:
                    continue
                received = (_now_ms(), self.blocked_ms)
                await self._slots.acquire()
                offsets: dict[TopicPartition, int] = {}
                for r in records:
                    offsets[TopicPartition(r[0], r[1])] = r[2] + 1
                task = asyncio.create_task(self._handle(records, producer, store, received))
                task.add_done_callback(lambda _: self._slots.release())
                pending.append((offsets, task))
                if on_batch is not None:
                    on_batch(self)
            for _, task in pending:
                await task
            await self._commit_done(consumer, pending)
        finally:
            for _, task in pending:
                task.cancel()
            await consumer.stop()
            await producer.stop()
            await redis.aclose()
            await self.backend.aclose()

    def stop(self) -> None:
        self.stopping.set()

    async def _micro_batch(self, consumer: AIOKafkaConsumer) -> list[Record]:
        """Up to ``batch_size`` records: what is there now, topped up for ``batch_wait_ms``."""
        s = self.settings
        deadline = time.monotonic() + s.batch_wait_ms / 1000
        records: list[Record] = []
        timeout_ms = 500  # the first wait: idle polling
        while len(records) < s.batch_size:
            got = await consumer.getmany(
                timeout_ms=timeout_ms, max_records=s.batch_size - len(records)
            )
            for batch in got.values():
                records.extend((m.topic, m.partition, m.offset, m.value) for m in batch)
            left = deadline - time.monotonic()
            if not records or left <= 0 or self.stopping.is_set():
                break
            timeout_ms = max(int(left * 1000), 0)
        return records

    async def _commit_done(
        self,
        consumer: AIOKafkaConsumer,
        pending: deque[tuple[dict[TopicPartition, int], asyncio.Task[None]]],
    ) -> None:
        """Commit the offsets of the finished batches that no unfinished batch precedes."""
        offsets: dict[TopicPartition, int] = {}
        while pending and pending[0][1].done():
            batch_offsets, task = pending.popleft()
            task.result()  # a bug in a batch stops the worker here, uncommitted
            offsets.update(batch_offsets)
        if offsets:
            await consumer.commit(offsets)

    # --- one micro-batch ------------------------------------------------------------------

    async def _handle(
        self,
        records: list[Record],
        producer: AIOKafkaProducer,
        store: U2QStore,
        received: tuple[int, float] | None = None,
    ) -> None:
        s, m = self.settings, self._m
        decoded = decode_requests(records)
        m.requests.inc(len(records))
        m.superseded.inc(decoded.superseded)
        letters = list(decoded.dead_letters)
        requests = decoded.requests
        prompts = [prompt_for(r, s.k, s.compressed) for r in requests]
        started = time.perf_counter()
        lists, rejected = await self._generate(prompts)
        model_ms = (time.perf_counter() - started) * 1000
        m.model_seconds.observe(model_ms / 1000)
        for i, reason in rejected.items():
            origin = f"{self.topics.name('regenerate')}/user {requests[i].user_id}"
            letters.append(encode(dead_letter(origin, encode(requests[i]), reason)))
        keep = [i for i in range(len(requests)) if i not in rejected and lists[i]]
        m.malformed.inc(sum(1 for i in range(len(requests)) if i not in rejected and not lists[i]))
        now = _now_ms()
        runs = [(requests[i].user_id, run_for(requests[i], lists[i], s.version, now)) for i in keep]
        outcomes = await self._until_up(lambda: store.write_many(runs), "Redis")
        written = {i for i, outcome in zip(keep, outcomes, strict=True) if outcome == "written"}
        done_ms = _now_ms()
        futures = []
        for i, request in enumerate(requests):
            if i in rejected:
                continue
            record = result_record(
                request,
                lists[i],
                written=i in written,
                model_version=s.version,
                backend=self.backend.name,
                model_ms=model_ms,
                now_ms=done_ms,  # after the cache write: freshness ends there
                prompt=prompts[i] if s.log_prompts else None,
                received=received,
            )
            key = request.user_id.encode()
            futures.append(await producer.send(self.topics.name("results"), encode(record), key))
            if i in written:
                m.freshness.observe(
                    max(done_ms - (request.ingest_ts or request.event_ts), 0) / 1000
                )
                m.request_to_cache.observe(max(done_ms - request.created_ts, 0) / 1000)
        for letter in letters:
            futures.append(await producer.send(self.topics.name("dead_letter"), letter))
        await asyncio.gather(*futures)
        m.written.inc(len(written))
        m.stale.inc(len(keep) - len(written))
        m.dead_letters.inc(len(letters))
        self.done += len(requests)

    async def _generate(self, prompts: Sequence[str]) -> tuple[list[list[str]], dict[int, str]]:
        """Lists for every prompt, and the reasons of those the backend refused outright."""
        try:
            return await self._until_up(
                functools.partial(self.backend.generate, prompts), "backend"
            ), {}
        except BackendRejected:
            pass
        lists: list[list[str]] = []
        rejected: dict[int, str] = {}
        for i, prompt in enumerate(prompts):  # find the offending request(s)
            try:
                one = functools.partial(self.backend.generate, [prompt])
                lists.extend(await self._until_up(one, "backend"))
            except BackendRejected as exc:
                lists.append([])
                rejected[i] = f"backend refused the prompt: {exc}"
        return lists, rejected

    async def _until_up(self, call: Callable[[], Awaitable[T]], what: str) -> T:
        """``call()`` with the configured retries; past them, pause until it works again."""
        retry = self.settings.retry((BackendUnavailable, ServiceError, RedisError, OSError))
        outage = 0
        while True:
            try:
                result = await retry.call(call, on_retry=lambda n, e: self._m.retries.inc())
            except (BackendUnavailable, ServiceError, RedisError, OSError) as exc:
                outage += 1
                if not self.paused:
                    log.warning("pausing: %s is down", what, error=repr(exc))
                self.paused = True
                self._m.paused.set(1)
                await asyncio.sleep(self._health(min(outage, 10)))
                if what == "backend":
                    while not await self.backend.healthy():
                        outage += 1
                        await asyncio.sleep(self._health(min(outage, 10)))
                continue
            if self.paused:
                log.info("resuming: %s is back", what)
                self.paused = False
                self._m.paused.set(0)
            return result


class _WorkerMetrics:
    def __init__(self, metrics: Metrics) -> None:
        c, h = metrics.counter, metrics.histogram
        self.requests = c("generate_requests_total", "regeneration requests consumed")
        self.superseded = c(
            "generate_superseded_total", "requests a newer one in the batch replaced"
        )
        self.written = c("generate_written_total", "runs written to the u2q cache")
        self.stale = c("generate_stale_total", "runs the cache refused: a newer version was there")
        self.malformed = c("generate_malformed_total", "outputs with no valid query (not written)")
        self.dead_letters = c("generate_dead_letters_total", "requests dead-lettered")
        self.retries = c("generate_retries_total", "retried backend or Redis calls")
        self.paused = metrics.gauge("generate_paused", "1 while waiting for a backend or Redis")
        self.freshness = h(
            "generate_freshness_seconds",
            "the triggering behaviour's ingest time (else its event time) to the u2q cache write",
            buckets=_FRESHNESS_BUCKETS,
        )
        self.request_to_cache = h(
            "generate_request_to_cache_seconds",
            "regeneration request emitted to the u2q cache write",
            buckets=_FRESHNESS_BUCKETS,
        )
        self.model_seconds = h(
            "generate_model_seconds", "backend time per micro-batch", buckets=_FRESHNESS_BUCKETS
        )
