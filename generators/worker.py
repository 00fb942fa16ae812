"""``aigq generate``: regeneration requests in, validated query lists into the u2q cache.

The loop (one consumer group; offsets committed by hand, never automatically):

1. take a **micro-batch** from ``<prefix>.regenerate``: up to ``batch_size`` requests, or what
   arrived within ``batch_wait_ms``;
2. hand it to a task, at most ``max_in_flight`` at once. While all slots are busy the
   partitions are *paused*: nothing piles up in memory (backpressure), and polling goes on so
   the group does not drop the worker;
3. the task builds the prompts, generates (timeout, retries with jittered backoff), writes
   the runs to Redis (compare-and-set on ``(watermark_ts, session version)``: an older or
   replayed request is a no-op), logs every list to ``<prefix>.results`` and records
   freshness;
4. offsets are committed only up to the newest batch whose every earlier batch is done too.

**Outages and refusals.** An *outage* (the backend or Redis down, timing out, or unable to
take writes at all) is waited out: past the retries the batch is **kept**, the partitions are
paused, the backend's health is polled with backoff, and the same batch carries on when it
answers. Nothing is committed meanwhile, so even a crash loses no request. A *refusal* is about
one record and would repeat forever: a record that is not a valid request (every field is
bounded), a prompt that cannot be built, a prompt the backend refuses or fails on, a run Redis
refuses for that user. That record goes to the dead-letter topic with its reason (counted by
kind in ``generate_dead_letters_total``), the rest of its batch carries on, and its offset is
committed like any other: no record can stop the worker or be retried forever. A batch the
backend refuses as a whole is retried one request at a time to find the offending ones.

**Stopping.** :meth:`GeneratorWorker.stop` ends every wait at once (the retry and backoff
sleeps, the health polls, a backend or Redis call in flight): a batch that was waiting ends
uncommitted, so it is redone after a restart (a cache write it had made replays as stale), and
:meth:`~GeneratorWorker.run` returns within about a second. Only logging a batch whose cache
write is done is let finish, so that its results are not lost.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition
from redis.exceptions import RedisError

from aigq.codec import encode
from aigq.errors import ServiceError
from aigq.events import GeneratedQueries, RegenerationRequest
from aigq.logging import get_logger
from aigq.metrics import Metrics
from aigq.retry import ExponentialBackoff
from aigq.settings import KafkaSettings, RedisSettings, TopicSettings
from cache.client import open_redis
from cache.u2q import U2QRun, U2QStore, WriteRefused, WriteResult
from generators.backends import Backend, BackendRejected, BackendUnavailable, open_backend
from generators.requests import (
    Letter,
    LetterKind,
    Record,
    Source,
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
# What a wait outlasts: the backend or Redis down, timing out, or unable to take work at all.
_OUTAGES = (BackendUnavailable, ServiceError, RedisError, OSError)
Pending = deque[tuple[dict[TopicPartition, int], asyncio.Task[None]]]


class Stopped(Exception):
    """Raised out of a batch's waits when :meth:`GeneratorWorker.stop` is called: the batch
    ends there, uncommitted."""


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
        self._waiting = 0  # batches waiting for the backend or Redis to come back
        self.done = 0  # requests decoded and finished (written, stale, malformed, dead letter)
        # Time spent unable to take requests (every slot busy, or a backend or Redis down):
        # stamped on each batch, so a reader can tell queueing for the model from transit.
        self.blocked_ms = 0.0
        self._slots = asyncio.Semaphore(settings.max_in_flight)
        self._health = ExponentialBackoff(settings.backoff_s, settings.backoff_max_s)
        self._m = _WorkerMetrics(self.metrics)
        # user -> (order, batch) of the newest request of the user in a batch not yet done
        self._newest: dict[str, tuple[tuple[int, int], int]] = {}
        self._batches = itertools.count()

    @property
    def paused(self) -> bool:
        """Whether at least one batch is waiting for the backend or Redis to come back."""
        return self._waiting > 0

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
        pending: Pending = deque()
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
                if not records or self.stopping.is_set():
                    continue  # (records taken while stopping are redone after a restart)
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
            if pending:  # stop() ended their waits: each is done now, or ends uncommitted
                await asyncio.wait([task for _, task in pending])
            await self._commit_done(consumer, pending)
        finally:
            for _, task in pending:  # what is left is not committed: redone after a restart
                if not task.done():
                    task.cancel()
                elif not task.cancelled() and not isinstance(task.exception(), Stopped):
                    log.error("batch failed", error=repr(task.exception()))
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

    async def _commit_done(self, consumer: AIOKafkaConsumer, pending: Pending) -> None:
        """Commit the offsets of the finished batches that no unfinished batch precedes."""
        offsets: dict[TopicPartition, int] = {}
        while pending and pending[0][1].done():
            batch_offsets, task = pending[0]
            if task.cancelled() or isinstance(task.exception(), Stopped):
                break  # stopped while it waited: redone after a restart
            pending.popleft()
            task.result()  # a bug in a batch stops the worker here, uncommitted
            offsets.update(batch_offsets)
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except KafkaError as exc:
            # The group moved on without us (a rebalance, or a restarted broker that forgot the
            # member: CommitFailedError), or the broker could not take it. Not fatal: aiokafka
            # rejoins by itself, the partitions' new owner resumes from the last commit that
            # held, and the requests it redoes are refused as stale by the u2q version check.
            self._m.commit_failures.inc()
            log.warning("offset commit failed; the records are redone", error=repr(exc))

    # --- one micro-batch ------------------------------------------------------------------

    async def _handle(
        self,
        records: list[Record],
        producer: AIOKafkaProducer,
        store: U2QStore,
        received: tuple[int, float] | None = None,
    ) -> None:
        """One micro-batch: every record ends written, stale, malformed or dead-lettered."""
        m = self._m
        decoded = decode_requests(records)
        m.requests.inc(len(records))
        m.superseded.labels(reason="batch").inc(decoded.superseded)
        requests, sources = decoded.requests, decoded.sources
        letters = list(decoded.dead_letters)
        newest, batch = self._newest, next(self._batches)
        for request in requests:  # the newest request of each user anywhere in this worker
            held = newest.get(request.user_id)
            if held is None or held[0] < request.order:
                newest[request.user_id] = (request.order, batch)
        try:
            await self._handle_live(requests, sources, letters, producer, store, received)
        finally:
            for request in requests:
                held = newest.get(request.user_id)
                if held is not None and held[1] == batch:
                    del newest[request.user_id]

    async def _superseded(self, requests: list[RegenerationRequest], store: U2QStore) -> set[int]:
        """The requests not worth a model call, counted by reason: a newer request of the same
        user came in a later batch (``newer_pending``), or the cache already holds a run at an
        equal or newer ``(watermark, version)`` (``cached``: a replay, a redone batch)."""
        heads = await self._until_up(lambda: store.heads([r.user_id for r in requests]), "Redis")
        skip: dict[int, str] = {}
        for i, request in enumerate(requests):
            head = heads.get(request.user_id)
            if self._newest[request.user_id][0] > request.order:
                skip[i] = "newer_pending"
            elif head is not None and head >= request.order:
                skip[i] = "cached"
        for reason in ("newer_pending", "cached"):
            self._m.superseded.labels(reason=reason).inc(sum(r == reason for r in skip.values()))
        return set(skip)

    async def _handle_live(
        self,
        requests: list[RegenerationRequest],
        sources: list[Source],
        letters: list[Letter],
        producer: AIOKafkaProducer,
        store: U2QStore,
        received: tuple[int, float] | None,
    ) -> None:
        """The rest of :meth:`_handle`, for the newest request of each user in the batch."""
        s, m = self.settings, self._m
        skipped = await self._superseded(requests, store)

        def refuse(i: int, kind: LetterKind, reason: str) -> None:
            letters.append(sources[i].letter(kind, reason))
            log.warning("dead-lettered", kind=kind, user=requests[i].user_id, reason=reason)

        prompts: dict[int, str] = {}
        for i, request in enumerate(requests):
            if i in skipped:
                continue
            try:
                prompts[i] = prompt_for(request, s.k, s.compressed)
            except Exception as exc:  # one request's input must not stop the others
                log.exception("no prompt", user=request.user_id)
                refuse(i, "prompt", f"the prompt could not be built: {exc!r}")
        started = time.perf_counter()
        lists, refused = await self._generate(prompts)
        model_ms = (time.perf_counter() - started) * 1000
        m.model_seconds.observe(model_ms / 1000)
        for i, (kind, reason) in refused.items():
            refuse(i, kind, reason)

        # The result records are made (and so validated) before the write: a record that
        # cannot be logged is dead-lettered instead of counted twice.
        now = _now_ms()
        results: dict[int, GeneratedQueries] = {}
        runs: list[tuple[int, U2QRun]] = []
        for i, queries in lists.items():
            step: LetterKind = "result"
            try:
                result = result_record(
                    requests[i],
                    queries,
                    written=False,
                    model_version=s.version,
                    backend=self.backend.name,
                    model_ms=model_ms,
                    now_ms=now,
                    prompt=prompts[i] if s.log_prompts else None,
                    received=received,
                )
                step = "run"
                if queries:
                    runs.append((i, run_for(requests[i], queries, s.version, now)))
            except Exception as exc:
                log.exception("no %s", step, user=requests[i].user_id)
                refuse(i, step, f"the {step} could not be made: {exc!r}")
                continue
            results[i] = result
        items = [(requests[i].user_id, run) for i, run in runs]
        outcomes = await self._until_up(lambda: store.write_many(items), "Redis")
        written: set[int] = set()
        for (i, _), outcome in zip(runs, outcomes, strict=True):
            if isinstance(outcome, WriteRefused):
                results.pop(i)
                refuse(i, "cache_refused", str(outcome))
            elif outcome is WriteResult.WRITTEN:
                written.add(i)
        done_ms = _now_ms()  # after the cache write: freshness ends there
        logged = [
            r.model_copy(update={"written": i in written, "generated_ts": done_ms})
            for i, r in results.items()
        ]
        # Not cut short by stop(): the cache write is done, so its record is logged.
        await self._log(producer, logged, letters)
        for i in written:
            request = requests[i]
            m.freshness.observe(max(done_ms - (request.ingest_ts or request.event_ts), 0) / 1000)
            m.request_to_cache.observe(max(done_ms - request.created_ts, 0) / 1000)
        m.written.inc(len(written))
        m.stale.inc(sum(1 for i, r in results.items() if r.queries and i not in written))
        m.malformed.inc(sum(1 for r in results.values() if not r.queries))
        stats = self.backend.stats  # since the start, of every list the backend validated
        for reason, count in (
            ("invalid", stats.dropped_invalid),
            ("duplicate", stats.dropped_duplicate),
            ("unsafe", stats.dropped_unsafe),
        ):
            m.dropped.labels(reason=reason).set(count)
        for letter in letters:
            m.dead_letters.labels(letter.kind).inc()
        self.done += len(requests)

    async def _log(
        self, producer: AIOKafkaProducer, results: list[GeneratedQueries], letters: list[Letter]
    ) -> None:
        """Every list to ``<prefix>.results``, every dead letter to ``<prefix>.dead_letter``."""
        futures = []
        for record in results:
            key = record.user_id.encode()
            futures.append(await producer.send(self.topics.name("results"), encode(record), key))
        for letter in letters:
            futures.append(await producer.send(self.topics.name("dead_letter"), letter.record))
        await asyncio.gather(*futures)

    async def _generate(
        self, prompts: dict[int, str]
    ) -> tuple[dict[int, list[str]], dict[int, tuple[LetterKind, str]]]:
        """A list for every prompt, by index, and why the others could not be generated."""
        if not prompts:
            return {}, {}
        indices = list(prompts)
        try:
            batch = [prompts[i] for i in indices]
            lists = await self._until_up(functools.partial(self.backend.generate, batch), "backend")
            return dict(zip(indices, lists, strict=True)), {}
        except Stopped:
            raise
        except BackendRejected as exc:  # refused as a whole: find the offending prompt(s)
            log.warning("backend refused a batch; trying its prompts one by one", error=str(exc))
        except Exception:  # failed as a whole (not an outage): the same, one by one
            log.exception("a batch failed; trying its prompts one by one")
        one_by_one: dict[int, list[str]] = {}
        failed: dict[int, tuple[LetterKind, str]] = {}
        for i in indices:
            try:
                one = functools.partial(self.backend.generate, [prompts[i]])
                [one_by_one[i]] = await self._until_up(one, "backend")
            except Stopped:
                raise
            except BackendRejected as exc:
                failed[i] = ("backend_refused", f"backend refused the prompt: {exc}")
            except Exception as exc:
                log.exception("a prompt failed")
                failed[i] = ("backend_error", f"generating failed: {exc!r}")
        return one_by_one, failed

    async def _until_up(self, call: Callable[[], Awaitable[T]], what: str) -> T:
        """``call()`` with the configured retries; past them, wait until it works again.

        Only outages are waited out; any other error is raised at once. While it waits, the
        batch counts in :attr:`paused`. Every wait, and the call itself, ends as soon as
        :meth:`stop` is called: then it raises ``Stopped``.
        """
        retry = self.settings.retry(_OUTAGES, sleep=self._sleep)
        outage = 0
        waiting = False
        try:
            while True:
                try:
                    result = await retry.call(
                        lambda: self._until_stopped(call()),
                        on_retry=lambda n, e: self._m.retries.inc(),
                    )
                except _OUTAGES as exc:
                    outage += 1
                    if not waiting:
                        waiting = True
                        self._waiting += 1
                        self._m.paused.set(1)
                        log.warning("pausing: %s is down", what, error=repr(exc))
                    await self._sleep(self._health(min(outage, 10)))
                    if what == "backend":
                        while not await self._healthy():
                            outage += 1
                            await self._sleep(self._health(min(outage, 10)))
                    continue
                if waiting:
                    log.info("resuming: %s is back", what)
                return result
        finally:
            if waiting:
                self._waiting -= 1
                if not self._waiting:
                    self._m.paused.set(0)

    async def _healthy(self) -> bool:
        try:
            return await self._until_stopped(self.backend.healthy())
        except _OUTAGES:  # a health check that fails says the same as one that answers no
            return False

    async def _sleep(self, seconds: float) -> None:
        await self._until_stopped(asyncio.sleep(seconds))

    async def _until_stopped(self, awaitable: Awaitable[T]) -> T:
        """``awaitable``'s result, or ``Stopped`` as soon as :meth:`stop` is called (the
        awaitable is cancelled then)."""
        work = asyncio.ensure_future(awaitable)
        stop = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait((work, stop), return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not work.done():
                work.cancel()
        if work.done() and not work.cancelled():
            return work.result()
        # Let the cancellation run its cleanup (a connection closed), briefly.
        await asyncio.wait((work,), timeout=1.0)
        if work.done() and not work.cancelled():
            work.exception()  # whatever it ended with, it is not this batch's outcome now
        raise Stopped


class _WorkerMetrics:
    def __init__(self, metrics: Metrics) -> None:
        c, h = metrics.counter, metrics.histogram
        self.requests = c("generate_requests_total", "regeneration requests consumed")
        self.superseded = c(
            "generate_superseded_total",
            "requests given no model call, by reason: batch (a newer one of the user in the "
            "same batch), newer_pending (in a later batch), cached (the cache holds a run at "
            "an equal or newer watermark and version)",
            labels=("reason",),
        )
        self.written = c("generate_written_total", "runs written to the u2q cache")
        self.stale = c("generate_stale_total", "runs the cache refused: a newer version was there")
        self.malformed = c("generate_malformed_total", "outputs with no valid query (not written)")
        self.dead_letters = c(
            "generate_dead_letters_total",
            "records dead-lettered, by kind (generators.requests.LetterKind)",
            labels=("reason",),
        )
        self.retries = c("generate_retries_total", "retried backend or Redis calls")
        self.commit_failures = c(
            "generate_commit_failures_total",
            "offset commits the group refused (rebalance, broker restart): redone, not lost",
        )
        self.paused = metrics.gauge("generate_paused", "1 while waiting for a backend or Redis")
        self.dropped = metrics.gauge(
            "generate_queries_dropped",
            "generated queries output validation dropped since the start, by reason "
            "(invalid, duplicate, unsafe: aigq.safety)",
            ["reason"],
        )
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
