"""Asking the broker what a partition holds at an offset, beside the worker's own consumer.

The gap guard (:mod:`streams.gaps`) uses it to tell a real gap in a source partition (no record
at the offset due: compaction, transaction markers, retention) from records its seeks have not
brought back yet.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError, OffsetOutOfRangeError
from aiokafka.structs import TopicPartition

from aigq.errors import ServiceError
from aigq.settings import KafkaSettings


async def first_offsets(
    kafka: KafkaSettings, at: Mapping[TopicPartition, int], timeout_s: float = 5.0
) -> dict[TopicPartition, int | None]:
    """For each partition, the offset of its first record at or after ``at[tp]``; None when
    the broker holds none there (yet) or none came within ``timeout_s``."""
    if not at:
        return {}
    # A plain consumer without a group: it must not join (or disturb) the worker's group.
    consumer = AIOKafkaConsumer(
        **kafka.aiokafka_config(), enable_auto_commit=False, auto_offset_reset="none"
    )
    found: dict[TopicPartition, int | None] = {tp: None for tp in at}
    try:
        await consumer.start()
        tps = [TopicPartition(tp.topic, tp.partition) for tp in at]  # Faust's TP is a tuple
        consumer.assign(tps)
        starts = await consumer.beginning_offsets(tps)
        waiting: set[TopicPartition] = set()
        for tp, offset in zip(tps, at.values(), strict=True):
            if offset < starts[tp]:
                found[tp] = starts[tp]  # retention removed what was due: the log starts later
                consumer.pause(tp)
            else:
                consumer.seek(tp, offset)
                waiting.add(tp)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while waiting and (left := deadline - loop.time()) > 0:
            try:
                batch = await consumer.getmany(*waiting, timeout_ms=int(min(left, 1.0) * 1000))
            except OffsetOutOfRangeError:  # past the log's end: nothing there yet
                break
            for tp, records in batch.items():
                if tp in waiting and records:
                    found[tp] = records[0].offset
                    waiting.discard(tp)
                    consumer.pause(tp)
    except KafkaError as exc:
        raise ServiceError(f"cannot read the source partitions: {exc!r}") from exc
    finally:
        await consumer.stop()
    return found
