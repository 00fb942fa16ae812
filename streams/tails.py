"""Reading a changelog past the end a broker reports, after the table's recovery.

The local broker (tansu) reports a partition's end offset as the start of its last record batch
+ 1, and Faust's table recovery stops there. A flush sends its states in batches and then seals
each partition it wrote with a batch of one record (``SessionWorker._seal``), which makes that
end exact; but a worker killed between the two leaves a partition ending in a batch of several
states, and the next recovery would miss all of it but its first record. Nothing would be lost
(the flush's events were never acked, so they are applied again), but those sessions would come
back older, and the versions written on top of them would go down in the changelog.

So once a worker's recovery is done, and before it applies a record of a partition it was
given, it reads each of those changelog partitions from the record before the reported end.
A fetch returns whole batches: that record's batch comes back in one response, with whatever
followed it in the batch. On a broker that reports exact ends (Kafka) the read returns the one
last record, which recovery already applied.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from aigq.errors import ServiceError
from aigq.settings import KafkaSettings


@dataclass(frozen=True, slots=True)
class Tail:
    """The records of one changelog partition at and past its reported end - 1, in order."""

    partition: int
    end: int  # the end offset the broker reported
    records: tuple[tuple[int, bytes | None, bytes | None], ...]  # (offset, key, value)

    def past_end(self) -> list[tuple[bytes | None, bytes | None]]:
        """The (key, value) of each record a recovery that stopped at ``end`` did not see."""
        return [(key, value) for offset, key, value in self.records if offset >= self.end]


async def read_tails(
    kafka: KafkaSettings,
    topic: str,
    partitions: Iterable[int],
    max_batch_bytes: int,
    timeout_s: float = 10.0,
) -> list[Tail]:
    """Each partition's last batch (see the module doc); an empty partition has no tail.

    ``max_batch_bytes``: the largest batch the changelog's producer writes; the fetch asks for at
    least that much, so one response holds the whole batch. Raises :class:`ServiceError` when
    the broker cannot be read or a partition's last record does not come within ``timeout_s``.
    """
    tps = [TopicPartition(topic, p) for p in sorted(set(partitions))]
    if not tps:
        return []
    # A plain consumer without a group: it must not join (or disturb) the worker's group.
    fetch_bytes = max(max_batch_bytes, 1 << 20) * 2
    consumer = AIOKafkaConsumer(
        **kafka.aiokafka_config(),
        enable_auto_commit=False,
        auto_offset_reset="none",
        max_partition_fetch_bytes=fetch_bytes,
        fetch_max_bytes=fetch_bytes * len(tps),
    )
    tails: list[Tail] = []
    try:
        await consumer.start()
        consumer.assign(tps)
        starts = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        waiting: set[TopicPartition] = set()
        for tp in tps:
            if ends[tp] > starts[tp]:
                consumer.seek(tp, ends[tp] - 1)
                waiting.add(tp)
            else:
                consumer.pause(tp)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while waiting:
            left = deadline - loop.time()
            if left <= 0:
                raise ServiceError(
                    f"changelog tails not read in {timeout_s:.0f} s: "
                    f"{sorted(tp.partition for tp in waiting)} of {topic}"
                )
            batch = await consumer.getmany(*waiting, timeout_ms=int(min(left, 1.0) * 1000))
            for tp, records in batch.items():
                if tp not in waiting or not records:
                    continue
                waiting.discard(tp)
                consumer.pause(tp)  # the response held the whole batch: nothing more to read
                tails.append(
                    Tail(
                        tp.partition,
                        ends[tp],
                        tuple((r.offset, r.key, r.value) for r in records),
                    )
                )
    except KafkaError as exc:
        raise ServiceError(f"cannot read the tails of {topic}: {exc!r}") from exc
    finally:
        await consumer.stop()
    return sorted(tails, key=lambda t: t.partition)
