"""``aigq backfill``: rebuild session state from a time range of the event topics.

A bounded, one-shot run of the same :class:`~streams.processor.SessionProcessor` the worker uses:

- every partition of the four source topics is read from the first offset whose record
  timestamp is ``since`` or later (Kafka's ``offsets_for_times``) to its end at the start of
  the run (see :func:`range_batches`); only records stamped in ``[since, until)`` are applied;
- state lives in the changelog of the app ``app_id`` (default ``<worker app>-backfill``), in the
  worker's own format, so a worker started with ``AIGQ_STREAM_APP_ID`` set to it carries on
  from the rebuilt state. The changelog is read back first, and each session remembers the
  last offset it applied per source partition: a second run over the same range applies
  nothing, which is what makes backfill idempotent;
- regeneration requests are off (``--no-generate``) or go through the cost governor (what it
  cannot pay for waits, then is counted as ``expired``)
  (``--max-regenerations-per-s``), so a backfill cannot flood the generators;
- state is written every ``flush_events`` records and at the end; offsets are committed for
  the consumer group ``app_id`` so progress is visible with the usual tools.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError

from aigq.dev.topics import ensure_topics
from aigq.errors import ServiceError
from aigq.events import EVENT_TYPES
from aigq.kafka_clients import build
from aigq.settings import KafkaSettings, TopicSettings
from streams.processor import SessionProcessor
from streams.settings import TABLE_NAME, StreamSettings
from streams.triggers import CostGovernor


@dataclass
class BackfillReport:
    applied: int = 0
    skipped: int = 0  # already in the state (an earlier run, or the live worker's)
    outside: int = 0  # read, but stamped outside the range
    requests: int = 0
    dead_letters: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    elapsed_s: float = 0.0


def changelog_topic(app_id: str) -> str:
    """The worker's table changelog for ``app_id`` (Faust's ``<app>-<table>-changelog``)."""
    return f"{app_id}-{TABLE_NAME}-changelog"


def backfill(
    kafka: KafkaSettings,
    topics: TopicSettings,
    settings: StreamSettings,
    since_ms: int,
    until_ms: int,
    app_id: str,
    generate: bool,
    max_regenerations_per_s: float = 0.0,
    flush_events: int = 50_000,
    on_progress: Callable[[BackfillReport], None] | None = None,
) -> BackfillReport:
    if until_ms <= since_ms:
        raise ValueError(f"until ({until_ms}) must be after since ({since_ms})")
    changelog = changelog_topic(app_id)
    # the state changelog, compacted, made as every topic is (the configured replication)
    ensure_topics(kafka, [changelog], topics.partitions, topics.replication_factor,
                  configs={"cleanup.policy": "compact"})  # fmt: skip
    states = read_changelog(kafka, changelog)
    processor = SessionProcessor(
        settings.session_config(),
        settings.trigger_policy(),
        load=states.get,
        governor=CostGovernor(max_regenerations_per_s),
        max_event_bytes=settings.max_event_bytes,
        generate=generate,
    )
    report = BackfillReport()
    started = time.monotonic()
    consumer = build(
        KafkaConsumer,
        f"Kafka at {kafka.bootstrap_servers}",
        **kafka.kafka_python_config(),
        group_id=app_id,
        enable_auto_commit=False,
        max_poll_records=5_000,
    )
    producer = build(
        KafkaProducer,
        f"Kafka at {kafka.bootstrap_servers}",
        **kafka.kafka_python_config(),
        enable_idempotence=False,
        max_in_flight_requests_per_connection=1,
        # One record per batch, as the worker writes: the local broker's end-offset quirk
        # would otherwise cut a recovering worker short of the last batch.
        batch_size=16,
    )
    try:
        unflushed = 0
        for records in range_batches(consumer, topics, since_ms, until_ms):
            for record in records:
                if not since_ms <= record.timestamp < until_ms:
                    report.outside += 1
                    continue
                outcome = processor.process(
                    record.topic, record.partition, record.offset, record.value
                )
                if outcome == "replayed":
                    report.skipped += 1
                else:
                    report.applied += 1
                unflushed += 1
            if unflushed >= flush_events:
                _flush(processor, producer, changelog, topics, report)
                unflushed = 0
                if on_progress is not None:
                    on_progress(report)
        _flush(processor, producer, changelog, topics, report)
        if on_progress is not None:
            on_progress(report)
        producer.flush()
        consumer.commit()
        processor.give_up_deferred()  # what the governor never paid for: counted as expired
    except KafkaError as exc:
        raise ServiceError(f"backfill failed: {exc}") from exc
    finally:
        consumer.close()
        producer.close()
    report.outcomes = processor.outcomes
    report.elapsed_s = time.monotonic() - started
    return report


def range_batches(
    consumer: KafkaConsumer, topics: TopicSettings, since_ms: int, until_ms: int
) -> Iterator[list[ConsumerRecord]]:
    """The records of every source partition from the first stamped ``since`` or later to its
    end at the start, one poll's worth at a time (the caller filters by timestamp: a partition
    may give records from before ``since`` and past ``until``). ``aigq backfill`` and the x2q
    builder (``aigq x2q build --source topics``) read their ranges with it.

    A partition is read past the end offset seen at the start until a record stamped ``until``
    or later turns up or it goes idle (two empty polls): the local broker (tansu) reports a
    partition's end as the start of its last record batch + 1, short of the real end, and
    answers ``offsets_for_times`` with 0 (reading then starts at the beginning; the timestamp
    filter keeps the range exact).
    """
    parts = [
        TopicPartition(name, p)
        for name in (topics.name(kind) for kind in EVENT_TYPES)
        for p in sorted(consumer.partitions_for_topic(name) or ())
    ]
    if not parts:
        raise ServiceError(f"no source topics {topics.prefix}.* on the broker")
    consumer.assign(parts)
    ends: dict[TopicPartition, int] = dict(consumer.end_offsets(parts))
    for tp, found in consumer.offsets_for_times({tp: since_ms for tp in parts}).items():
        consumer.seek(tp, found.offset if found is not None else ends[tp])
    idle: Counter[TopicPartition] = Counter()
    latest: dict[TopicPartition, int] = {}
    while ends:
        batch = consumer.poll(timeout_ms=500)
        for tp, records in batch.items():
            latest[tp] = records[-1].timestamp
        yield [record for records in batch.values() for record in records]
        for tp in list(ends):
            idle[tp] = 0 if tp in batch else idle[tp] + 1
            if consumer.position(tp) >= ends[tp] and (
                latest.get(tp, 0) >= until_ms or idle[tp] >= 2
            ):
                del ends[tp]
                consumer.pause(tp)


def _flush(
    processor: SessionProcessor,
    producer: KafkaProducer,
    changelog: str,
    topics: TopicSettings,
    report: BackfillReport,
) -> None:
    drained = processor.drain()
    for user, state in drained.states.items():
        producer.send(changelog, key=user.encode(), value=state)
    for user, request in drained.requests:
        producer.send(topics.name("regenerate"), key=user.encode(), value=request)
    for letter in drained.dead_letters:
        producer.send(topics.name("dead_letter"), value=letter)
    producer.flush()
    report.requests += len(drained.requests)
    report.dead_letters += len(drained.dead_letters)


def read_changelog(kafka: KafkaSettings, name: str) -> dict[str, bytes]:
    """The latest state per user in a changelog (empty when the topic is new)."""
    consumer = build(
        KafkaConsumer,
        f"Kafka at {kafka.bootstrap_servers}",
        **kafka.kafka_python_config(),
        enable_auto_commit=False,
    )
    try:
        parts = [TopicPartition(name, p) for p in sorted(consumer.partitions_for_topic(name) or ())]
        consumer.assign(parts)
        consumer.seek_to_beginning()
        ends = consumer.end_offsets(parts)
        states: dict[str, bytes] = {}
        while any(consumer.position(tp) < ends[tp] for tp in parts):
            for records in consumer.poll(timeout_ms=500).values():
                for record in records:
                    if record.key is not None and record.value is not None:
                        states[record.key.decode()] = record.value
        return states
    finally:
        consumer.close()
