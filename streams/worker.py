"""``aigq worker``: the Faust app that keeps per-user session state and emits regeneration requests.

The agent is a thin loop: it takes batches of raw records (no per-event Record objects), hands
each to the :class:`~streams.processor.SessionProcessor` and keeps the events un-acked. A timer
flushes every ``flush_interval_s``:

1. the processor's dirty sessions go to the changelog-backed table, one write per user;
2. the governed regeneration requests and the dead letters are produced;
3. only once the broker has acknowledged all of that are the flushed events acked, in the order
   they arrived, so Faust never commits a source offset whose effects are not durable;
4. users' recent triggers and search histories go to Redis for the read API (a cache: a
   failure does not stop it).

A crash therefore replays the events since the group's last commit (Faust commits every
``broker_commit_every`` seconds, only up to acked events: often several flush intervals, more
under lag); each session records the last offset it applied per source partition, so those
that did reach the state are skipped (exact counts), and requests are at-least-once (a
generator's compare-and-set on the session watermark and version makes a repeat a no-op).

A partition whose log was reset (recreated, or a broker that lost its data) is told from a
re-delivery by the mark the worker keeps per source partition (:mod:`streams.resets`); its
new records are applied, and the reset is logged and counted.

An agent that crashes (a bug outside the per-record path, which dead-letters what it cannot
apply) makes the worker unready (``/ready`` 503, ``/health`` 500), and the worker stops and
exits non-zero, so an orchestrator restarts it; nothing unflushed is acked.

A gap guard (:mod:`streams.gaps`) keeps each source partition's records in offset order with
none skipped, which Faust alone does not promise right after a rebalance.

The flush runs in a loop of its own, not a Faust timer (Faust ends its timers as soon as a stop
begins). Faust does not wait, at a rebalance or a stop, for every message taken to be acked
(``stream_wait_empty=False``): the revoke hook flushes what was applied, and what was taken and
not flushed is read again by the partition's next owner, where each session's offsets skip
what it already holds. After each assignment's recovery the worker reads its changelog
partitions' last batches whole (:mod:`streams.tails`).

Two Faust details this depends on (faust-streaming 0.15): acks must reach Faust in offset order
per partition (``Consumer._new_offset`` can commit past an un-acked offset otherwise), and its
pre-commit producer flush gives up after 100 ms, so the changelog sends are awaited here.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import faust
from aiokafka.structs import TopicPartition
from faust.types import TP

from aigq.errors import ConfigError, ServiceError
from aigq.events import EVENT_TYPES
from aigq.logging import get_logger
from aigq.metrics import Metrics
from aigq.redis_clients import open_redis
from aigq.settings import KafkaSettings, RedisSettings, TopicSettings, WebSettings
from cache.budget import SharedBudget
from cache.errors import CacheError
from cache.history_store import HistoryStore
from cache.recent import RecentTriggers
from streams.faust_app import committed_offsets, faust_broker_options, run_app
from streams.gaps import GapGuard, Verdict
from streams.peek import first_offsets
from streams.processor import SessionProcessor
from streams.resets import Found, Mark, mark_key, read_marked, source_marks
from streams.settings import TABLE_NAME, StreamSettings
from streams.tails import read_tails

log = get_logger(__name__)


# How long a crashed worker may take to stop cleanly before it exits without waiting.
_CRASH_GRACE_S = 20.0


def _exit_now(exc: BaseException) -> None:
    log.error("crashed worker did not stop in time: exiting now", error=repr(exc))
    os._exit(1)


class SessionWorker:
    """The Faust app, its topics and table, and the flush that ties them together."""

    def __init__(
        self,
        kafka: KafkaSettings,
        topics: TopicSettings,
        web: WebSettings,
        settings: StreamSettings,
        redis: RedisSettings | None = None,
        metrics: Metrics | None = None,
        on_flushed: Callable[[SessionWorker], None] | None = None,
        flush_at: int | None = None,
    ) -> None:
        """``redis``: where each flush records users' recent triggers and search histories for
        the read API (``settings.recent_triggers``, ``settings.history``; none without it).
        ``flush_at``: flush as soon as that many records are applied, not at the next tick (a
        benchmark's end; the timer still flushes every interval)."""
        if settings.store == "rocksdb":
            raise ConfigError(
                "AIGQ_STREAM_STORE=rocksdb: Faust's RocksDB store files a key under the partition "
                "of the event being processed, which coalesced flushes do not have; use memory"
            )
        self.settings = settings
        self.topics = topics
        self.metrics = metrics or Metrics()
        datadir = Path(settings.data_dir) / settings.app_id
        datadir.mkdir(parents=True, exist_ok=True)
        self.on_flushed = on_flushed
        self.flush_at = flush_at
        self.app = faust.App(
            settings.app_id,
            **faust_broker_options(kafka),
            store="memory://",
            datadir=str(datadir),
            topic_partitions=topics.partitions,
            topic_replication_factor=topics.replication_factor,
            broker_session_timeout=settings.session_timeout_s,
            # A flush writes thousands of states: a send per batch, not per record, is what
            # makes it cheap (bench: 0.82 / 2.92 against 0.78 / 2.4 with one record a batch).
            # _seal covers the local broker's end-offset quirk that batches would otherwise hit,
            # and _recover_tails a flush killed before its seal.
            producer_max_batch_size=settings.changelog_batch_bytes,
            producer_max_request_size=4 * 1024 * 1024,
            consumer_auto_offset_reset="earliest",
            table_standby_replicas=0,
            # Faust's rebalance and stop would wait until every message taken is acked or
            # garbage (Consumer.wait_empty, a weak set). A record the gap guard dropped is never
            # acked, and Faust's own stream iterator keeps the last one it passed alive until
            # the next arrives, which a rebalance has stopped: a drop right before a rebalance
            # held it forever (1 run in 3 of the join/leave test). Acking it instead could
            # commit past the gap (Consumer._new_offset). Without the wait nothing is lost:
            # the revoke hook flushes, and what is re-read is skipped by the sessions' offsets.
            stream_wait_empty=False,
            web_enabled=True,
            **web.faust_options(),
        )
        self._source_names = frozenset(topics.name(kind) for kind in EVENT_TYPES)
        self.source = self.app.topic(
            *(topics.name(kind) for kind in EVENT_TYPES),
            key_serializer="raw",
            value_serializer="raw",
        )
        self.table = self.app.Table(
            TABLE_NAME,
            partitions=topics.partitions,
            use_partitioner=True,  # never written from inside an event (see flush)
            key_type=bytes,
            value_type=bytes,
        )
        self.processor = SessionProcessor(
            settings.session_config(),
            settings.trigger_policy(),
            load=self._load,
            governor=settings.governor(),
            max_event_bytes=settings.max_event_bytes,
            generate=settings.generate,
            recent=settings.recent_triggers and redis is not None,
            max_future_ms=int(settings.max_future_s * 1000),
            history=settings.history and redis is not None,
            defer_max_ms=int(settings.defer_max_s * 1000),
        )
        self._redis = open_redis(redis) if redis is not None else None
        prefix = redis.key_prefix if redis is not None else ""
        self._recent: RecentTriggers | None = None
        if settings.recent_triggers and self._redis is not None:
            self._recent = RecentTriggers(self._redis, prefix=prefix)
        self._budget: SharedBudget | None = None
        if settings.budget == "shared":
            if self._redis is None:
                raise ConfigError("AIGQ_STREAM_BUDGET=shared needs Redis")
            self._budget = SharedBudget(self._redis, prefix=prefix, policy=settings.budget_policy())
        self._history: HistoryStore | None = None
        if settings.history and self._redis is not None:
            self._history = HistoryStore(self._redis, prefix=prefix, ttl_s=settings.history_ttl_s)
        self.unacked: list[Any] = []  # events applied but not yet flushed, in arrival order
        self.processed = 0  # records received (applied, or dropped by the gap guard)
        self.flushed = 0  # records applied, made durable and acked
        self.started_at: float | None = None  # monotonic time of the first record
        self.ready = False
        self.crashed: BaseException | None = None
        self.resets = 0  # source partitions found reset (a new incarnation of their log)
        self._last: dict[TP, Any] = {}  # the last message applied per source partition
        self._unverified: set[TP] = set()  # assigned, marks not yet checked with the broker
        self._untailed: set[int] = set()  # assigned changelog partitions not yet read to the end
        self._flush_lock = asyncio.Lock()
        self._unsealed: dict[int, bytes] = {}  # changelog partition -> its last key, unsealed
        self._flush_now: asyncio.Future[None] | None = None
        self._reported: Counter[str] = Counter()
        self._applied: dict[TP, int] = {}  # next offset to read, per source partition
        self._committed: dict[TP, int] = {}  # the group's committed offsets at assignment
        self.gaps: GapGuard[TP] = GapGuard(self._committed.get, max_seeks=settings.gap_seeks)
        self._kafka = kafka
        self._define()

    def _load(self, user_id: str) -> bytes | None:
        value: bytes | None = self.table.get(user_id.encode())
        return value

    def _define(self) -> None:
        app, settings = self.app, self.settings

        @app.agent(self.source, name="sessions")
        async def sessions(stream: Any) -> None:
            # Batches of what arrived within 50 ms: the flush, not the batch, sets the pace.
            within = min(0.05, settings.flush_interval_s)
            try:
                await self._consume(stream, within)
            except Exception as exc:
                await self._crash(exc)
                raise

        @app.task  # type: ignore[untyped-decorator]
        async def flush_timer() -> None:
            # Not app.timer: Faust's timers end as soon as a stop begins; this loop flushes on
            # through the stop, until Faust cancels its tasks.
            while True:
                await asyncio.sleep(settings.flush_interval_s)
                try:
                    await self.flush()
                except Exception as exc:
                    await self._crash(exc)
                    raise

        self._define_hooks()

    async def _consume(self, stream: Any, within: float) -> None:
        """The agent's loop (see the module doc)."""
        app, process, gaps = self.app, self.processor.process, self.gaps
        applied, check, unacked, last = self._applied, gaps.check, self.unacked, self._last
        async for events in stream.noack_take(10_000, within=within):
            now = time.monotonic()
            if self.started_at is None:
                self.started_at = now
            if self._untailed:
                await self._recover_tails()
            if self._unverified:
                await self._verify({e.message.tp for e in events} & self._unverified)
            seeks: dict[TP, int] = {}
            verify: dict[TP, int] = {}
            for event in events:
                message = event.message
                tp, offset = message.tp, message.offset
                verdict = check(tp, offset, now)
                if verdict is Verdict.BEHIND:
                    # Gone back without a rebalance: a reset log, or a re-delivery.
                    await self._verify({tp}, rewound=True)
                    gaps.forget([tp])  # the position is here now, either way
                    verdict = check(tp, offset, now)
                if verdict is Verdict.APPLY:
                    stamp = message.timestamp  # seconds: when it entered the topic
                    process(
                        message.topic,
                        message.partition,
                        offset,
                        message.value,
                        int(stamp * 1000) if stamp else None,
                    )
                    applied[tp] = offset + 1
                    last[tp] = message
                    unacked.append(event)
                elif verdict is Verdict.SEEK:
                    seeks[tp] = gaps.due(tp) or 0
                elif verdict is Verdict.VERIFY:
                    verify[tp] = gaps.due(tp) or 0
                # Verdict.DROP: neither applied nor acked; it comes again after the seek
            self.processed += len(events)
            if verify:
                seeks.update(await self._verify_gaps(verify))
            for tp, due in seeks.items():
                log.warning("source records skipped: reading again", partition=str(tp), at=due)
                await app.consumer.seek(tp, due)
            if self.flush_at is not None and self.processed >= self.flush_at:
                self.flush_at = None
                self._flush_now = asyncio.ensure_future(self.flush())
            # No reference to a batch's records outlives it here (a record the gap guard
            # dropped is never acked; see stream_wait_empty above).
            events = event = message = None

    async def _verify_gaps(self, due: dict[TP, int]) -> dict[TP, int]:
        """Ask the broker whether each gap the seeks found again is real (:mod:`streams.gaps`);
        the offset to seek each partition to."""
        try:
            first = await first_offsets(
                self._kafka, {TopicPartition(tp.topic, tp.partition): o for tp, o in due.items()}
            )
        except ServiceError as exc:  # cannot tell: not real until the broker says so
            log.warning("source gaps not checked", error=str(exc))
            first = {}
        now, seeks = time.monotonic(), {}
        for tp, offset in due.items():
            there = first.get(TopicPartition(tp.topic, tp.partition))
            if there is not None and there > offset:
                log.warning("source gap is real", partition=str(tp), skipped=[offset, there])
                self.gaps.accept(tp, there)
                seeks[tp] = there
            else:
                log.warning("source gap not real: reading again", partition=str(tp), at=offset)
                self.gaps.retry(tp, now)
                seeks[tp] = offset
        return seeks

    async def _recover_tails(self) -> None:
        """Apply the changelog records past the end the broker reported to the recovery: the
        rest of a batch whose flush was killed before its seal (:mod:`streams.tails`)."""
        partitions, self._untailed = self._untailed, set()
        changelog = self.table.changelog_topic.get_topic_name()
        try:
            tails = await read_tails(
                self._kafka, changelog, partitions, self.settings.changelog_batch_bytes
            )
        except ServiceError as exc:  # states may come back older; none is lost (module doc)
            self.metrics.counter(
                "stream_changelog_tail_errors_total", "changelog tails not read after recovery"
            ).inc()
            log.warning("changelog tails not read", error=str(exc))
            return
        store, applied = self.table.data, 0
        for tail in tails:
            for key, value in tail.past_end():
                if key is None:
                    continue
                if value is None:
                    store.pop(key, None)
                else:
                    store[key] = value
                applied += 1
        self.metrics.counter(
            "stream_changelog_tail_records_total", "changelog records applied past recovery's end"
        ).inc(applied)
        if applied:
            log.warning(
                "changelog records past the reported end applied (a flush killed before its seal)",
                records=applied,
                partitions=sorted(t.partition for t in tails if t.past_end()),
            )

    async def _verify(self, tps: set[TP], rewound: bool = False) -> None:
        """Check the marks of ``tps`` against the broker; a partition whose marked record is
        gone or changed is a new incarnation: its epoch goes up (see :mod:`streams.resets`)."""
        self._unverified -= tps
        marks = source_marks(tps, self.table.data)
        epochs = self.processor.epochs
        for tp, mark in marks.items():
            epochs.setdefault(f"{tp.topic}/{tp.partition}", mark.epoch)
        if not marks:
            return
        try:
            found = await read_marked(self._kafka, marks)
        except ServiceError as exc:  # keep the marks: a skipped re-delivery is the safe side
            log.warning("source marks not checked", error=str(exc))
            return
        by_name = {(tp.topic, tp.partition): tp for tp in marks}
        for key, what in found.items():
            tp = by_name[(key.topic, key.partition)]
            where, mark = f"{tp.topic}/{tp.partition}", marks[tp]
            if what is Found.OTHER and epochs[where] <= mark.epoch:
                epochs[where] = mark.epoch + 1
                self.resets += 1
                self.gaps.forget([tp])
                log.warning(
                    "source partition reset: its records are applied as new",
                    partition=where,
                    epoch=epochs[where],
                    marked_offset=mark.offset,
                    rewound=rewound,
                )
            elif what is Found.UNKNOWN:
                log.info("source mark not checkable (record gone)", partition=where)

    async def _crash(self, exc: BaseException) -> None:
        """Unready, then stop the worker (it exits non-zero: see :meth:`run`)."""
        if self.crashed is not None:
            return
        self.crashed = exc
        self.ready = False
        log.error("session agent crashed: stopping", error=repr(exc))
        # Should the clean stop hang anyway, past the grace period the process exits at once;
        # nothing is lost, as nothing past the last flush was committed.
        watchdog = threading.Timer(_CRASH_GRACE_S, _exit_now, args=(exc,))
        watchdog.daemon = True
        watchdog.start()
        os.kill(os.getpid(), signal.SIGTERM)

    def _define_hooks(self) -> None:
        app, settings = self.app, self.settings

        @app.task  # type: ignore[untyped-decorator]
        async def mark_ready() -> None:  # tasks start after table recovery
            self.ready = True

        @app.on_partitions_assigned.connect  # type: ignore[arg-type]
        async def on_assigned(sender: Any, assigned: set[TP], **kwargs: Any) -> None:
            self._tune_fetch()
            sources = {tp for tp in assigned if tp.topic in self._source_names}
            self.gaps.forget(sources)
            self._unverified |= sources  # checked at their first records, after recovery
            # Source partition p's sessions and marks are in changelog partition p.
            self._untailed |= {tp.partition for tp in sources}
            try:
                committed = await committed_offsets(self._kafka, settings.app_id, sources)
            except ServiceError as exc:  # the guard then trusts the first record it sees
                log.warning("no committed offsets for the gap guard", error=str(exc))
            else:
                self._committed.update(committed)

        @app.on_partitions_revoked.connect  # type: ignore[arg-type]
        async def on_revoked(sender: Any, revoked: set[TP], **kwargs: Any) -> None:
            # Deferred triggers are given up (their users may be another worker's now): before
            # the flush, so that a trigger baseline it puts back is written while the
            # partitions are still ours, and after it, for those that flush deferred.
            self.processor.give_up_deferred()
            await self.flush()  # Faust waits for our acks before giving partitions away
            self.processor.give_up_deferred()
            self.processor.forget()
            self.gaps.forget(revoked)
            self._unverified -= revoked
            self._untailed -= {tp.partition for tp in revoked if tp.topic in self._source_names}
            for tp in revoked:
                self._applied.pop(tp, None)
                self._committed.pop(tp, None)

        @app.on_before_shutdown.connect  # type: ignore[arg-type]
        async def close_redis(sender: Any, **kwargs: Any) -> None:
            if self._redis is not None:
                await self._redis.aclose()

        @app.page("/health")
        async def health(view: Any, request: Any) -> Any:
            if self.crashed is not None:
                return view.json({"alive": False, "error": repr(self.crashed)}, status=500)
            return view.json({"alive": True, "processed": self.processed})

        @app.page("/ready")
        async def ready(view: Any, request: Any) -> Any:
            ok = self.ready and not app.rebalancing and self.crashed is None
            return view.json({"ready": ok}, status=200 if ok else 503)

        @app.page("/metrics")
        async def metrics(view: Any, request: Any) -> Any:
            self.report_lag()
            return view.bytes(self.metrics.exposition(), content_type="text/plain; version=0.0.4")

    def _tune_fetch(self) -> None:
        """Set the worker consumer's fetch wait to ``AIGQ_KAFKA_FETCH_MAX_WAIT_MS``.

        faust-streaming 0.15 hard-codes ``fetch_max_wait_ms=1500`` for it (no setting reaches
        ``AIOKafkaConsumerThread._create_worker_consumer``), and a broker that answers a fetch
        only when that wait is over (the local tansu does) holds every record that long:
        measured record-to-consumer at 200 records/s, p50 377 / p99 753 ms at 1,500 ms
        against 32 / 58 ms at 100. No public API reaches it, so this sets the aiokafka
        fetcher's attribute, which it reads for every fetch (pinned: faust-streaming 0.15,
        aiokafka < 0.15); where it is not found the wait stays Faust's, and that is logged.
        """
        thread = getattr(self.app.consumer, "_thread", None)
        fetcher = getattr(getattr(thread, "_consumer", None), "_fetcher", None)
        if fetcher is None or not hasattr(fetcher, "_fetch_max_wait_ms"):
            log.warning("fetch wait not set: Faust's consumer has another shape")
            return
        fetcher._fetch_max_wait_ms = self._kafka.fetch_max_wait_ms

    async def flush(self) -> None:
        """Write what the processor holds, wait for the broker, then ack (see the module doc).

        Shielded: a flush cancelled half-way (the timer task, at shutdown) would leave
        changelog batches unsealed and events unacked; it runs to its end instead, and the
        next flush (at a revoke) waits for it on the lock.
        """
        await asyncio.shield(self._flush())
        if self.on_flushed is not None:
            self.on_flushed(self)

    async def _flush(self) -> None:
        async with self._flush_lock:
            started = time.perf_counter()
            drained = self.processor.drain(await self._allowance())
            events = self.unacked.copy()  # in place: the agent holds this list
            self.unacked.clear()
            producer, store = self.app.producer, self.table.data
            changelog = self.table.changelog_topic.get_topic_name()
            # State goes straight to the table's store and its changelog through the producer,
            # not Table.__setitem__: that path queues in Faust's 100-message send buffer, which
            # stalls consumption while full and gives no future to wait on. The key is the user
            # id's bytes, partitioned by murmur2 like the source records: same partition.
            futures: list[Awaitable[Any]] = []
            keys: list[bytes] = []
            for user, state in drained.states.items():
                key = user.encode()
                store[key] = state
                keys.append(key)
                futures.append(await producer.send(changelog, key, state, None, None, None))
            # Each source partition's mark goes to the changelog partition of its number,
            # where the sessions it describes are (same partitioner, same count).
            epochs = self.processor.epochs
            for tp, message in self._last.items():
                key = mark_key(tp.topic, tp.partition)
                mark = Mark.of(message, epochs.get(f"{tp.topic}/{tp.partition}", 0))
                store[key] = value = mark.to_bytes()
                keys.append(key)
                futures.append(await producer.send(changelog, key, value, tp.partition, None, None))
            self._last.clear()
            regenerate, dead = self.topics.name("regenerate"), self.topics.name("dead_letter")
            for user, request in drained.requests:
                futures.append(
                    await producer.send(regenerate, user.encode(), request, None, None, None)
                )
            for letter in drained.dead_letters:
                futures.append(await producer.send(dead, None, letter, None, None, None))
            if futures:
                written = await asyncio.gather(*futures)
                for key, metadata in zip(keys, written[: len(keys)], strict=True):
                    self._unsealed[metadata.partition] = key
            if self._unsealed:
                await self._seal(changelog)
            if events:
                # Event.ack() is what Stream.ack does for the consumer (mark the offset safe to
                # commit), without a coroutine and Faust's monitor sensors per event.
                for event in events:
                    event.ack()
                self.flushed += len(events)
            await self._record_recent(drained.recent)
            await self._record_history(drained.history)
            self._report(len(events), len(drained.states), time.perf_counter() - started)

    async def _allowance(self) -> int | None:
        """How many requests this flush may emit: the shared budget's grant (None: the
        processor's local governor). Redis down or slow: none now (they stay pending)."""
        wanted = len(self.processor.pending)
        if self._budget is None or not wanted:
            return None
        try:
            grant = await asyncio.wait_for(self._budget.take(wanted), 0.5)
        except (CacheError, TimeoutError) as exc:
            self.metrics.counter("stream_budget_errors_total", "budget reads failed").inc()
            log.warning("budget not read; triggers wait", error=repr(exc))
            return 0
        m = self.metrics
        m.gauge("stream_budget_capacity", "live generators' capacity, lists/s").set(grant.capacity)
        m.gauge("stream_budget_backlog", "live generators' backlog, requests").set(grant.backlog)
        return grant.granted

    async def _record_recent(self, recent: list[tuple[str, str, str, int]]) -> None:
        """Users' recent triggers to Redis for the read API. A cache, not state of record: a
        failure is counted and logged, and the flush goes on (the next event refreshes it)."""
        if self._recent is None or not recent:
            return
        try:
            await self._recent.record_many(recent)
        except CacheError as exc:
            self.metrics.counter("stream_recent_errors_total", "recent-trigger writes failed").inc()
            log.warning("recent triggers not written", error=str(exc), triggers=len(recent))

    async def _record_history(self, history: list[tuple[str, list[str]]]) -> None:
        """The top history queries of users who searched, to Redis for the read API; a cache
        like the recent triggers: a failure is counted and logged, and the flush goes on (the
        user's next search writes it again)."""
        if self._history is None or not history:
            return
        try:
            await self._history.write_many(history)
        except CacheError as exc:
            self.metrics.counter("stream_history_errors_total", "history writes failed").inc()
            log.warning("histories not written", error=str(exc), users=len(history))

    async def _seal(self, changelog: str) -> None:
        """End each changelog partition this flush wrote with a batch of one record.

        The states above go out in batches (a send each is most of a flush's cost). The local
        broker reports a partition's end offset as the start of its last batch + 1, which would
        cut a recovering table short of that batch; re-writing each partition's last state as a
        batch of its own (the flush lock keeps anything else out of it) makes that end offset
        exact. The repeat is the same value under the same key: recovery is unchanged. A
        partition stays in ``_unsealed`` until its seal is acknowledged, so a flush that did
        not get that far is sealed by the next one.
        """
        store, producer = self.table.data, self.app.producer
        sealing = dict(self._unsealed)
        futures = [
            await producer.send(changelog, key, store[key], partition, None, None)
            for partition, key in sealing.items()
        ]
        await asyncio.gather(*futures)
        for partition, key in sealing.items():
            if self._unsealed.get(partition) == key:
                del self._unsealed[partition]

    def _report(self, events: int, states: int, seconds: float) -> None:
        m = self.metrics
        m.counter("stream_events_total", "source records applied").inc(events)
        m.counter("stream_state_writes_total", "session states written to the table").inc(states)
        gauge = m.gauge(
            "stream_source_gaps", "skipped source offsets: seeks, drops, accepted", ["what"]
        )
        gauge.labels(what="seeks").set(self.gaps.seeks)
        gauge.labels(what="dropped").set(self.gaps.dropped)
        gauge.labels(what="accepted").set(self.gaps.accepted)
        m.histogram("stream_flush_seconds", "time to make one flush durable").observe(seconds)
        m.gauge("stream_source_resets", "source partitions found reset (new log)").set(self.resets)
        m.gauge("stream_clock_clamped", "events dated too far ahead, clamped").set(
            self.processor.clamped
        )
        decisions = m.counter("stream_decisions_total", "records by outcome", ["outcome"])
        for outcome, count in self.processor.outcomes.items():
            delta = count - self._reported[outcome]
            if delta:
                decisions.labels(outcome=outcome).inc(delta)
                self._reported[outcome] = count
        if len(self.processor.sessions) > self.settings.max_hot_sessions:
            self.processor.forget()

    def report_lag(self) -> None:
        """Consumer lag per source partition: the broker's end offset minus what was applied."""
        gauge = self.metrics.gauge("stream_consumer_lag", "records not yet applied", ["partition"])
        consumer = self.app.consumer
        for tp in consumer.assignment():
            if tp.topic in self._source_names:
                end = consumer.highwater(tp)
                # Nothing applied yet since the assignment: the position is the committed
                # offset (0 read as the whole topic after every restart), or the start.
                at = self._applied.get(tp, self._committed.get(tp, 0))
                if end is not None:
                    gauge.labels(partition=f"{tp.topic}/{tp.partition}").set(max(end - at, 0))

    def run(self) -> None:
        """Run until SIGTERM/SIGINT (blocking; Faust owns the event loop)."""
        # The agent holds a flush interval's worth of events and every hot session: with the
        # default threshold (700) the collector walks them constantly. Measured: +5% events/s.
        gc.set_threshold(50_000, 20, 100)
        run_app(self.app)
        if self.crashed is not None:
            raise ServiceError(f"the session agent crashed: {self.crashed!r}")

    @staticmethod
    def stop() -> None:
        """Ask the running worker (this process) to stop cleanly: commit, flush, exit 0."""
        os.kill(os.getpid(), signal.SIGTERM)
