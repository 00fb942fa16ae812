"""Reading a changelog's last batch whole, past the end the broker reports, on the real broker."""

from __future__ import annotations

import uuid

import pytest
from kafka import KafkaProducer

from aigq.dev.topics import ensure_topics
from aigq.settings import KafkaSettings
from streams.tails import Tail, read_tails

pytestmark = pytest.mark.integration


def _send(kafka: KafkaSettings, topic: str, partition: int, values: list[bytes]) -> None:
    """``values`` to one partition in as few batches as the producer makes (one, here)."""
    producer = KafkaProducer(
        **kafka.kafka_python_config(), enable_idempotence=False, linger_ms=1_000
    )
    for value in values:
        producer.send(topic, key=value, value=value, partition=partition)
    producer.flush()
    producer.close()


def test_past_end_is_what_a_recovery_stopping_at_the_reported_end_missed() -> None:
    tail = Tail(0, end=6, records=((5, b"a", b"1"), (6, b"b", b"2"), (7, b"a", None)))
    assert tail.past_end() == [(b"b", b"2"), (b"a", None)]
    assert Tail(1, end=3, records=((2, b"k", b"v"),)).past_end() == []


@pytest.mark.asyncio
async def test_the_last_batch_comes_back_whole(kafka: KafkaSettings) -> None:
    topic = f"tails-{uuid.uuid4().hex[:8]}"
    ensure_topics(kafka, [topic], 3, 1)
    _send(kafka, topic, 0, [b"old"])
    _send(kafka, topic, 0, [f"s{i}".encode() for i in range(5)])  # one batch of five
    _send(kafka, topic, 1, [b"x", b"y"])
    _send(kafka, topic, 1, [b"seal"])  # a batch of one: the reported end is exact
    # partition 2 stays empty: it has no tail

    tails = {t.partition: t for t in await read_tails(kafka, topic, [0, 1, 2], 1 << 20)}

    assert sorted(tails) == [0, 1]
    log = [b"old"] + [f"s{i}".encode() for i in range(5)]
    zero = tails[0]
    # From the record before the reported end (tansu: the batch's start + 1; Kafka: exact) to
    # the log's real end; what lies past the reported end is what a recovery there missed.
    assert [value for _, _, value in zero.records] == log[zero.end - 1 :]
    assert [value for _, value in zero.past_end()] == log[zero.end :]
    assert tails[1].past_end() == [] and tails[1].records[-1][2] == b"seal"
