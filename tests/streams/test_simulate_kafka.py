"""``aigq simulate`` on the real local broker: exposures and searches in, hint clicks out."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from aigq.codec import decode, encode
from aigq.events import HintClickEvent, HintExposureEvent, SearchEvent, ShownQuery
from aigq.kafka_clients import build
from aigq.settings import KafkaSettings, TopicSettings
from streams.simulate import Simulate
from streams.simulator import SimulatorSettings

pytestmark = pytest.mark.integration

WINDOW_S = 60


def _exposure(user: str, request: str, ts: int, *queries: str) -> HintExposureEvent:
    shown = tuple(ShownQuery(query=q, source="u2q", position=i) for i, q in enumerate(queries))
    return HintExposureEvent(user_id=user, ts=ts, request_id=request, shown=shown)


def _produce(kafka: KafkaSettings, topics: TopicSettings, t: int) -> int:
    """Four users' exposures and searches, each record stamped with its arrival time."""
    sends: list[tuple[HintExposureEvent | SearchEvent, int]] = [
        # u1: the next search equals a shown hint after normalisation: a click at position 0.
        (_exposure("u1", "r1", t, "running shoes", "trail shoes"), t),
        (SearchEvent(user_id="u1", ts=t, query="Running  Shoes"), t + 5_000),
        # u2: the next search matches nothing shown.
        (_exposure("u2", "r2", t, "garden hose"), t),
        (SearchEvent(user_id="u2", ts=t, query="tents"), t + 5_000),
        # u3: the exposure arrives after the search it preceded; ROUGE-L 0.8 >= 0.6.
        (SearchEvent(user_id="u3", ts=t, query="running shoes"), t + 1_000),
        (_exposure("u3", "r3", t, "tents", "trail running shoes"), t),
        # u4: the next search comes after the window: the exposure expires (by that search, or
        # by the process's expiry once it has seen records past the window).
        (_exposure("u4", "r4", t, "tents"), t - WINDOW_S * 1000 - 1_000),
        (SearchEvent(user_id="u4", ts=t, query="tents"), t),
    ]
    producer: KafkaProducer = build(KafkaProducer, "the test broker", **kafka.kafka_python_config())
    try:
        for event, at_ms in sends:
            producer.send(topics.name(event.type), encode(event), key=b"u", timestamp_ms=at_ms)
        # Not an event at all: counted and skipped.
        producer.send(topics.name("search"), b"not json", key=b"u", timestamp_ms=t)
        producer.flush()
    finally:
        producer.close()
    return len(sends) + 1


def _committed(kafka: KafkaSettings, group: str, topics: TopicSettings) -> int:
    """How many records the group committed past, over both input topics."""
    consumer = KafkaConsumer(**kafka.kafka_python_config(), group_id=group)
    try:
        total = 0
        for name in (topics.name("hint_exposure"), topics.name("search")):
            for partition in consumer.partitions_for_topic(name) or ():
                total += consumer.committed(TopicPartition(name, partition)) or 0
        return total
    finally:
        consumer.close()


async def _run_until(process: Simulate, clicks: int, records: int) -> None:
    """Run the process until it made ``clicks``, read ``records`` and expired an exposure."""
    task = asyncio.create_task(process.run())
    deadline = time.monotonic() + 60  # a guard against a hang, not a timing assertion
    counts = process.counts
    while time.monotonic() < deadline and not task.done():
        counts = process.counts
        read = counts["exposures"] + counts["searches"] + counts["undecodable"]
        if counts["clicks"] >= clicks and read >= records and counts["expired"]:
            break
        await asyncio.sleep(0.1)
    process.stop()
    await task


def test_simulate_turns_matching_next_searches_into_hint_clicks(
    kafka: KafkaSettings, topics: TopicSettings, read_topics: Any
) -> None:
    t = int(time.time() * 1000) - 120_000
    produced = _produce(kafka, topics, t)
    settings = SimulatorSettings(
        window_s=WINDOW_S, position_decay=0.0, group_id=f"sim-{topics.prefix}"
    )
    process = Simulate(kafka, topics, settings)
    asyncio.run(_run_until(process, clicks=2, records=produced))

    counts = process.counts
    assert (counts["exposures"], counts["searches"], counts["undecodable"]) == (4, 4, 1)
    assert (counts["clicks"], counts["no_match"], counts["expired"]) == (2, 1, 1)
    records = read_topics([topics.name("hint_click")], 2)
    clicks = sorted((decode(r.value) for r in records), key=lambda c: c.user_id)
    assert clicks == [
        HintClickEvent(
            user_id="u1", ts=t + 5_000, request_id="r1", query="running shoes",
            source="u2q", position=0, event_id="sim:r1",
        ),
        HintClickEvent(
            user_id="u3", ts=t + 1_000, request_id="r3", query="trail running shoes",
            source="u2q", position=1, event_id="sim:r3",
        ),
    ]  # fmt: skip
    assert sorted(r.key for r in records) == [b"u1", b"u3"]
    assert _committed(kafka, settings.group_id, topics) == produced
    assert b"aigq_simulate_clicks_total 2.0" in process.metrics.exposition()
