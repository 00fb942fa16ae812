"""``aigq x2q build --source topics``: the events of the last N days, from the event topics.

In a cluster the builder reads what the session worker reads: the source topics, every
partition from the first record stamped ``since`` or later to its end at the start
(:func:`streams.backfill.range_batches`, the range reader ``aigq backfill`` uses, with the
local broker's quirks handled there). The window is on the records' timestamps (when they
entered Kafka), the one clock every record shares; a replayed log keeps its own event times,
which the trigger collector then spans whole.

Each record goes through the one decoder (:func:`aigq.codec.decode`); one that does not
decode is counted (``undecodable``), never dropped silently; so are records outside the window
and event types the index does not use (exposures).
"""

from __future__ import annotations

from collections import Counter

from kafka import KafkaConsumer
from kafka.errors import KafkaError

from aigq.codec import decode
from aigq.errors import EventError, ServiceError
from aigq.events import ClickEvent, HintClickEvent, SearchEvent
from aigq.kafka_clients import build
from aigq.settings import KafkaSettings, TopicSettings
from streams.backfill import range_batches

TriggerEvent = SearchEvent | ClickEvent | HintClickEvent


def read_window(
    kafka: KafkaSettings, topics: TopicSettings, since_ms: int, until_ms: int
) -> tuple[list[TriggerEvent], Counter[str]]:
    """The searches, clicks and hint clicks stamped in ``[since_ms, until_ms)``, and what was
    read: ``kept``, ``outside`` (stamped outside the window), ``undecodable``, ``other``
    (event types the index does not use). Raises ServiceError when the broker fails."""
    if until_ms <= since_ms:
        raise ValueError(f"empty window: since {since_ms} >= until {until_ms}")
    counts: Counter[str] = Counter()
    events: list[TriggerEvent] = []
    consumer = build(
        KafkaConsumer,
        f"Kafka at {kafka.bootstrap_servers}",
        **kafka.kafka_python_config(),
        group_id=None,  # a reader, not a member: it must not join (or move) any group
        enable_auto_commit=False,
        max_poll_records=5_000,
    )
    try:
        for records in range_batches(consumer, topics, since_ms, until_ms):
            for record in records:
                if not since_ms <= record.timestamp < until_ms:
                    counts["outside"] += 1
                    continue
                try:
                    event = decode(record.value)
                except EventError:
                    counts["undecodable"] += 1
                    continue
                if isinstance(event, SearchEvent | ClickEvent | HintClickEvent):
                    events.append(event)
                    counts["kept"] += 1
                else:
                    counts["other"] += 1
    except KafkaError as exc:
        raise ServiceError(f"reading the event topics failed: {exc}") from exc
    finally:
        consumer.close()
    events.sort(key=lambda e: e.ts)
    return events, counts
