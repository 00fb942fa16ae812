"""``aigq generate``: regeneration requests in, validated query lists into the u2q cache.

The loop (one consumer group; offsets committed by hand, never automatically):

1. read requests as they come into the **pending set** (:mod:`generators.pending`): at most one
   per user, bounded in count and bytes; a newer request of a user replaces the pending one and
   one no newer than a request being generated is dropped at once (superseded). While the set
   is full, or an outage is being waited out, the partitions are paused and polling goes on
   (backpressure: nothing piles up in memory, and the group keeps the worker);
2. while a generation slot is free (``max_in_flight``), take the best ``batch_size`` pending
   requests (by priority, or in arrival order) as a **micro-batch**, when a full batch is
   pending or ``batch_wait_ms`` after the first one came in;
3. the batch skips what is superseded (a newer request came in, or the cache holds an equal or
   newer run: one round trip), builds the prompts, generates (timeout, retries with jittered
   backoff), writes the runs to Redis (compare-and-set on ``(watermark_ts, session version)``:
   an older or replayed request is a no-op), logs every list to ``<prefix>.results`` and
   records freshness;
4. per partition, offsets are committed up to the lowest one not finished (pending, being
   generated, or its dead letter not yet sent), so a crash redoes only what was unfinished;
5. about once a second, its measured capacity and backlog go to the shared budget
   (:mod:`cache.budget`) that the session workers draw on.

**Outages and refusals.** An *outage* (the backend or Redis down, timing out, or unable to
take writes at all) is waited out (:mod:`generators.waits`): the batch is **kept**, the
partitions are paused, the backend's health is polled with backoff, and the same batch carries
on when it answers. Nothing past it is committed meanwhile, so even a crash loses no request. A
*refusal* is about one record and would repeat forever: a record that is not a valid request
(every field is bounded), a prompt that cannot be built, a prompt the backend refuses or fails
on, a run Redis refuses for that user. That record goes to the dead-letter topic with its
reason (counted by kind in ``generate_dead_letters_total``), the rest of its batch carries on,
and its offset is committed like any other: no record can stop the worker or be retried
forever. A batch the backend refuses as a whole is retried one request at a time to find the
offending ones.

**Rebalances.** Before partitions are taken away, the batches in flight get
``revoke_wait_s`` to finish, what is done is committed, and what was pending from those
partitions is handed back (their new owner reads it again from the commit).

**Hot reload.** :mod:`generators.reload` runs beside the loop and swaps the backend's model
when a version is announced; each list is recorded with the version that generated it.

**Stopping.** :meth:`GeneratorWorker.stop` ends every wait at once (the retry and backoff
sleeps, the health polls, a backend or Redis call in flight): a batch that was waiting ends
uncommitted, so it is redone after a restart (a cache write it had made replays as stale), and
:meth:`~GeneratorWorker.run` returns within about a second. Only logging a batch whose cache
write is done is let finish, so that its results are not lost.
"""

from __future__ import annotations

import asyncio
import functools
import os
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from aigq.codec import encode
from aigq.errors import ServiceError
from aigq.events import GeneratedQueries, RegenerationRequest
from aigq.logging import get_logger
from aigq.metrics import Metrics
from aigq.redis_clients import open_redis
from aigq.registry import Registry
from aigq.settings import KafkaSettings, RedisSettings, TopicSettings
from cache.budget import SharedBudget
from cache.errors import CacheError
from cache.u2q import U2QRun, U2QStore, WriteRefused, WriteResult
from generators.backends import Backend, BackendRejected, open_backend
from generators.pending import Entry, OffsetLedger, PendingSet, Throughput
from generators.reload import ModelWatcher
from generators.requests import (
    Letter,
    LetterKind,
    Source,
    decode_request,
    prompt_for,
    result_record,
    run_for,
)
from generators.settings import GeneratorSettings
from generators.waits import Stopped, Waits
from generators.worker_metrics import WorkerMetrics

log = get_logger(__name__)
T = TypeVar("T")


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
        registry: Registry | None = None,
    ) -> None:
        self.kafka, self.topics, self.redis_settings, self.settings = kafka, topics, redis, settings
        self.backend = backend or open_backend(settings)
        self.metrics = metrics or Metrics()
        self.stopping = asyncio.Event()
        self.done = 0  # requests decoded and finished (written, stale, malformed, dead letter)
        # Time spent unable to take requests (every slot busy, or a backend or Redis down):
        # stamped on each batch, so a reader can tell queueing for the model from transit.
        self.blocked_ms = 0.0
        self._m = WorkerMetrics(self.metrics)
        self.waits = Waits(settings, self.backend, self.stopping, self._m.retries, self._m.paused)
        self.queue = PendingSet(
            settings.order, settings.aging_s, settings.max_pending, settings.max_pending_bytes
        )
        self.ledger = OffsetLedger()
        self._flying: dict[str, Entry] = {}  # user -> their newest request being generated
        self._tasks: set[asyncio.Task[int]] = set()
        self._in_flight = 0
        self._filling_since = 0.0  # when the pending micro-batch got its first request
        self._failed: BaseException | None = None
        self.throughput = Throughput(initial=settings.initial_capacity)
        self.member = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._published = 0.0  # when capacity and backlog last went to the shared budget
        self.watcher = ModelWatcher(kafka, topics, settings, self.backend, self._m, registry)

    @property
    def paused(self) -> bool:
        """Whether at least one batch is waiting for the backend or Redis to come back."""
        return self.waits.waiting > 0

    # --- the loop -------------------------------------------------------------------------

    async def run(self, on_batch: Callable[[GeneratorWorker], None] | None = None) -> None:
        """Consume until :meth:`stop`; commits what is done before it returns."""
        s = self.settings
        consumer = AIOKafkaConsumer(
            **self.kafka.aiokafka_config(),
            group_id=s.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=s.batch_size,
            fetch_max_wait_ms=self.kafka.fetch_max_wait_ms,
        )
        consumer.subscribe([self.topics.name("regenerate")], listener=_Rebalance(self, consumer))
        producer = AIOKafkaProducer(
            **self.kafka.aiokafka_config(), enable_idempotence=False, linger_ms=5
        )
        redis = open_redis(self.redis_settings)
        prefix = self.redis_settings.key_prefix
        store = U2QStore(redis, prefix=prefix, keep_runs=s.keep_runs, ttl_s=s.ttl_s)
        budget = SharedBudget(redis, prefix=prefix)
        try:
            await consumer.start()
            await producer.start()
        except KafkaError as exc:
            await redis.aclose()
            raise ServiceError(f"Kafka at {self.kafka.bootstrap_servers}: {exc!r}") from exc
        try:
            self.watcher.start()  # hot reload (does nothing with AIGQ_GENERATE_RELOAD off)
            while not self.stopping.is_set():
                if self._failed is not None:
                    raise self._failed  # a bug in a batch stops the worker, uncommitted
                await self._commit(consumer)
                await self._publish(consumer, budget)
                taking = not self.queue.full and not self.paused
                if taking:
                    consumer.resume(*consumer.paused())
                else:  # nothing piles up in memory; polling keeps the membership alive
                    consumer.pause(*consumer.assignment())
                polled = time.perf_counter()
                got = await consumer.getmany(timeout_ms=self._poll_ms())
                if not taking:
                    self.blocked_ms += (time.perf_counter() - polled) * 1000
                if self.stopping.is_set():
                    break  # (records taken while stopping are redone after a restart)
                await self._take_in(got, producer)
                if self._dispatch(producer, store) and on_batch is not None:
                    on_batch(self)
            if self._tasks:  # stop() ended their waits: each is done now, or ends uncommitted
                await asyncio.wait(self._tasks)
            await self._commit(consumer)
        finally:
            await self.watcher.aclose()
            for task in self._tasks:  # what is left is not committed: redone after a restart
                task.cancel()
            await consumer.stop()
            await producer.stop()
            await redis.aclose()
            await self.backend.aclose()

    def stop(self) -> None:
        self.stopping.set()

    def backlog(self, consumer: AIOKafkaConsumer) -> int:
        """Requests not yet answered: pending, being generated, and left in the partitions."""
        left = 0
        for tp in consumer.assignment():
            end, read = consumer.highwater(tp), self.ledger.next_offset(tp)
            if end is not None and read is not None:
                left += max(end - read, 0)
        return len(self.queue) + len(self._flying) + left

    async def _publish(self, consumer: AIOKafkaConsumer, budget: SharedBudget) -> None:
        """About once a second: capacity and backlog to the shared budget (cache.budget)."""
        now = time.monotonic()
        if now - self._published < 1.0:
            return
        self._published = now
        capacity, backlog = self.throughput.rate(), self.backlog(consumer)
        self._m.capacity.set(capacity)
        self._m.backlog.set(backlog)
        try:
            slots = self.settings.max_in_flight * self.settings.batch_size
            await asyncio.wait_for(budget.publish(self.member, capacity, backlog, slots), 0.5)
        except (CacheError, TimeoutError) as exc:
            self._m.budget_errors.inc()
            log.warning("capacity not published", error=repr(exc))

    def _poll_ms(self) -> int:
        """How long one poll may wait: until the pending micro-batch is due, briefly while it
        waits for a slot, else idle polling."""
        if not len(self.queue):
            return 500
        if self._in_flight >= self.settings.max_in_flight or self.paused:
            return 20
        due = self._filling_since + self.settings.batch_wait_ms / 1000 - time.monotonic()
        return max(int(due * 1000), 0)

    async def _take_in(
        self, got: dict[TopicPartition, list[Any]], producer: AIOKafkaProducer
    ) -> None:
        """Every record polled: into the pending set, superseded, or dead-lettered."""
        letters: list[tuple[TopicPartition, int, Letter]] = []
        now_s, now_ms = time.monotonic(), _now_ms()
        for tp, messages in got.items():
            self._m.requests.inc(len(messages))
            for m in messages:
                self.ledger.take(tp, m.offset)
                source, decoded = decode_request((m.topic, m.partition, m.offset, m.value))
                if isinstance(decoded, Letter):
                    letters.append((tp, m.offset, decoded))
                    continue
                size = len(m.value or b"")
                entry = Entry(decoded, source, tp, m.offset, size, now_s, now_ms, self.blocked_ms)
                if not len(self.queue):
                    self._filling_since = now_s
                flying = self._flying.get(decoded.user_id)
                offered = self.queue.offer(entry, flying.request.order if flying else None)
                for gone in (offered.superseded, offered.displaced):
                    if gone is not None:
                        self.ledger.finish(gone.tp, gone.offset)
                        self._m.superseded.labels(reason="newer_pending").inc()
                        self.done += 1
        if letters:
            await self._log(producer, [], [letter for _, _, letter in letters])
            for tp, offset, letter in letters:
                self._m.dead_letters.labels(letter.kind).inc()
                self.ledger.finish(tp, offset)
                self.done += 1
        self._m.pending.set(len(self.queue))

    def _dispatch(self, producer: AIOKafkaProducer, store: U2QStore) -> bool:
        """Start micro-batches of the best pending requests while slots are free: when a full
        batch is pending, or ``batch_wait_ms`` after the first pending one came in."""
        s, started = self.settings, False
        while len(self.queue) and self._in_flight < s.max_in_flight and not self.paused:
            waited = time.monotonic() - self._filling_since
            if len(self.queue) < s.batch_size and waited < s.batch_wait_ms / 1000:
                break
            entries = self.queue.take(s.batch_size)
            self._filling_since = time.monotonic()
            for entry in entries:
                self._flying[entry.request.user_id] = entry
            self._in_flight += 1
            self.throughput.started(time.monotonic())
            task = asyncio.create_task(self._handle(entries, producer, store))
            self._tasks.add(task)
            task.add_done_callback(functools.partial(self._batch_done, entries))
            started = True
        self._m.pending.set(len(self.queue))
        return started

    def _batch_done(self, entries: list[Entry], task: asyncio.Task[int]) -> None:
        self._tasks.discard(task)
        self._in_flight -= 1
        generated = 0 if task.cancelled() or task.exception() else task.result()
        self.throughput.finished(time.monotonic(), generated, self._in_flight > 0)
        for entry in entries:
            if self._flying.get(entry.request.user_id) is entry:
                del self._flying[entry.request.user_id]
        if task.cancelled() or isinstance(task.exception(), Stopped):
            return  # stopped while it waited: redone after a restart
        if task.exception() is not None:
            log.error("batch failed", error=repr(task.exception()))
            self._failed = task.exception()
            return
        for entry in entries:
            self.ledger.finish(entry.tp, entry.offset)

    async def _commit(self, consumer: AIOKafkaConsumer) -> None:
        """Commit, per partition, up to the lowest offset not yet finished."""
        offsets = self.ledger.committable()
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
            self.ledger.committed(offsets)
        except KafkaError as exc:
            # The group moved on without us (a rebalance, or a restarted broker that forgot the
            # member: CommitFailedError), or the broker could not take it. Not fatal: aiokafka
            # rejoins by itself, the partitions' new owner resumes from the last commit that
            # held, and the requests it redoes are refused as stale by the u2q version check.
            self._m.commit_failures.inc()
            log.warning("offset commit failed; the records are redone", error=repr(exc))

    async def revoked(self, consumer: AIOKafkaConsumer, tps: set[TopicPartition]) -> None:
        """Partitions taken away in a rebalance: let the batches in flight finish (briefly),
        commit what is done, and forget what was pending from them (their new owner reads it
        again from the commit)."""
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=self.settings.revoke_wait_s)
        await self._commit(consumer)
        self.ledger.forget(tps)
        dropped = self.queue.drop_partitions(tps)
        for user in [u for u, e in self._flying.items() if e.tp in tps]:
            del self._flying[user]  # no longer ours: a re-read request is not superseded by it
        if dropped:
            log.info("rebalance: pending requests handed back", count=len(dropped))
        self._m.pending.set(len(self.queue))

    # --- one micro-batch ------------------------------------------------------------------

    async def _handle(
        self, entries: list[Entry], producer: AIOKafkaProducer, store: U2QStore
    ) -> int:
        """One micro-batch: every request ends written, stale, malformed, skipped or
        dead-lettered. Returns how many lists the model generated."""
        now = time.monotonic()
        requests = [e.request for e in entries]
        sources = [e.source for e in entries]
        stamps = [(e.received_ms, e.blocked_ms, (now - e.arrived_s) * 1000) for e in entries]
        return await self._handle_live(requests, sources, [], producer, store, stamps)

    async def _superseded(self, requests: list[RegenerationRequest], store: U2QStore) -> set[int]:
        """The requests not worth a model call, counted by reason: a newer request of the same
        user came in since (``newer_pending``: pending, or in another batch), or the cache
        already holds a run at an equal or newer ``(watermark, version)`` (``cached``: a
        replay, a redone batch)."""
        heads = await self.waits.until_up(
            lambda: store.heads([r.user_id for r in requests]), "Redis"
        )
        skip: dict[int, str] = {}
        for i, request in enumerate(requests):
            head = heads.get(request.user_id)
            newer = self.queue.get(request.user_id) or self._flying.get(request.user_id)
            if newer is not None and newer.request.order > request.order:
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
        stamps: list[tuple[int, float, float]],
    ) -> int:
        """The rest of :meth:`_handle`; ``stamps``: per request, when it was read, the blocked
        time by then, and its time in the pending set (ms)."""
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
        for i, (queries, version) in lists.items():  # the version that generated it
            step: LetterKind = "result"
            try:
                result = result_record(
                    requests[i],
                    queries,
                    written=False,
                    model_version=version,
                    backend=self.backend.name,
                    model_ms=model_ms,
                    now_ms=now,
                    prompt=prompts[i] if s.log_prompts else None,
                    received=stamps[i],
                )
                step = "run"
                if queries:
                    runs.append((i, run_for(requests[i], queries, version, now)))
            except Exception as exc:
                log.exception("no %s", step, user=requests[i].user_id)
                refuse(i, step, f"the {step} could not be made: {exc!r}")
                continue
            results[i] = result
        items = [(requests[i].user_id, run) for i, run in runs]
        outcomes = await self.waits.until_up(lambda: store.write_many(items), "Redis")
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
        return len(lists)

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
    ) -> tuple[dict[int, tuple[list[str], str]], dict[int, tuple[LetterKind, str]]]:
        """A list and the model version that generated it for every prompt, by index, and why
        the others could not be generated."""
        if not prompts:
            return {}, {}
        indices = list(prompts)
        try:
            batch = [prompts[i] for i in indices]
            lists, version = await self.waits.until_up(
                functools.partial(self.backend.generate_versioned, batch), "backend"
            )
            return {i: (one, version) for i, one in zip(indices, lists, strict=True)}, {}
        except Stopped:
            raise
        except BackendRejected as exc:  # refused as a whole: find the offending prompt(s)
            log.warning("backend refused a batch; trying its prompts one by one", error=str(exc))
        except Exception:  # failed as a whole (not an outage): the same, one by one
            log.exception("a batch failed; trying its prompts one by one")
        one_by_one: dict[int, tuple[list[str], str]] = {}
        failed: dict[int, tuple[LetterKind, str]] = {}
        for i in indices:
            try:
                one = functools.partial(self.backend.generate_versioned, [prompts[i]])
                ([queries], version) = await self.waits.until_up(one, "backend")
                one_by_one[i] = (queries, version)
            except Stopped:
                raise
            except BackendRejected as exc:
                failed[i] = ("backend_refused", f"backend refused the prompt: {exc}")
            except Exception as exc:
                log.exception("a prompt failed")
                failed[i] = ("backend_error", f"generating failed: {exc!r}")
        return one_by_one, failed


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """aiokafka's public hook: awaited before partitions are taken away."""

    def __init__(self, worker: GeneratorWorker, consumer: AIOKafkaConsumer) -> None:
        self.worker, self.consumer = worker, consumer

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.worker.revoked(self.consumer, set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        pass
