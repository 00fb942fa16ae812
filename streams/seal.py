"""Sealing a changelog before it is recovered: the local broker's end-offset quirk.

tansu reports a partition's end offset as the start of its last record batch + 1, and a
recovering Faust table reads a changelog partition up to that end offset. The worker therefore
ends each flush with a batch of one record per changelog partition it wrote (its *seal*,
``SessionWorker._seal``). A worker killed between a flush's batches and that seal leaves a
partition ending in a batch of several records; whoever recovers it next would stop after the
batch's first record and miss the rest. Nothing is lost by that (the flush's events were not
acked, so they come again and are applied on the older states), but the states go back: a
session's version in the changelog goes down, which is what a hostile run saw
(``aigq bench faults``, worker-kill).

So at every rebalance, before the new assignment is recovered, the worker writes a tombstone of
:data:`SEAL_KEY` to every partition of its changelog, each a batch of its own, and waits for
the broker. Every partition then ends in a single-record batch and its reported end offset is
exact. The tombstone deletes a key no session has (user ids hold no NUL), so recovery is
otherwise unchanged; readers of the changelog skip tombstones. On a broker that reports end
offsets exactly (Kafka) it is one small record per partition per rebalance.
"""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from aigq.errors import ServiceError
from aigq.settings import KafkaSettings

SEAL_KEY = b"\x00seal"  # NUL: never a user id (see streams.resets.MARK_PREFIX)


async def seal_changelog(kafka: KafkaSettings, topic: str) -> int:
    """End every partition of ``topic`` with a single-record batch (a tombstone of
    :data:`SEAL_KEY`); the number of partitions sealed (0 when the topic does not exist yet:
    there is nothing to recover, and a send would create it with the broker's defaults)."""
    # A producer of its own: Faust's coalesces sends into its batches, and this runs once a
    # rebalance, where a connection more costs nothing that matters.
    producer = AIOKafkaProducer(**kafka.aiokafka_config(), enable_idempotence=False, linger_ms=0)
    try:
        await producer.start()
        cluster = await producer.client.fetch_all_metadata()
        partitions = sorted(cluster.partitions_for_topic(topic) or ())
        # Each partition is a batch of its own: one record per partition, sent at once.
        futures = [
            await producer.send(topic, key=SEAL_KEY, value=None, partition=p) for p in partitions
        ]
        await asyncio.gather(*futures)
        return len(partitions)
    except KafkaError as exc:
        raise ServiceError(f"cannot seal the changelog {topic}: {exc!r}") from exc
    finally:
        await producer.stop()
