"""Asking the real broker for a partition's first record at or after an offset."""

from __future__ import annotations

import uuid

import pytest
from aiokafka.structs import TopicPartition
from kafka import KafkaProducer

from aigq.dev.topics import ensure_topics
from aigq.settings import KafkaSettings
from streams.peek import first_offsets

pytestmark = pytest.mark.integration


@pytest.mark.asyncio
async def test_the_first_record_at_or_after_an_offset(kafka: KafkaSettings) -> None:
    topic = f"peek-{uuid.uuid4().hex[:8]}"
    ensure_topics(kafka, [topic], 2, 1)
    producer = KafkaProducer(**kafka.kafka_python_config(), enable_idempotence=False)
    for i in range(3):
        producer.send(topic, value=f"v{i}".encode(), partition=0)
    producer.flush()
    producer.close()
    zero, one = TopicPartition(topic, 0), TopicPartition(topic, 1)

    found = await first_offsets(kafka, {zero: 1, one: 0}, timeout_s=3.0)

    assert found == {zero: 1, one: None}  # partition 1 holds nothing (yet)
    assert await first_offsets(kafka, {zero: 3}, timeout_s=2.0) == {zero: None}
