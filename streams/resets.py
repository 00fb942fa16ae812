"""Source partition resets: telling a re-delivery from a new incarnation of the log.

A session skips a record at or below the last offset it applied from that partition: after a
crash the records since the last commit come again, and counting them twice would be wrong.
But offsets only mean something within one incarnation of a partition's log. A topic deleted
and created again, or a broker that lost its data (the local broker keeps topics in memory),
starts again at offset 0 with new records, and the group's position goes back with it
(committed offsets gone, or past the new end, so the consumer resets to the earliest). Seen
in a hostile run: 83 % of the events after a broker restart were skipped as "replayed".

So the worker keeps, per source partition, a **mark** in its own table (one small record,
written at each flush that applied records of the partition, in the changelog partition of
the same number, so it is recovered with the sessions it describes): the partition's epoch
and the offset, Kafka timestamp and value checksum of the last record applied. When a
partition is assigned, and whenever its records go back below what was applied without a
rebalance, the worker reads the record at the marked offset from the broker
(:func:`read_marked`). The same record there means the same log: records are re-deliveries,
skipped as before. Another record, or none (the log is now shorter), means a new incarnation:
the partition's epoch goes up by one, which every session compares with the epoch stored
beside its offsets (``streams.session.Session.seen``), so the new records are applied.

A mark whose record the broker no longer holds (retention deleted it) cannot be checked; it
is trusted, and that is logged. Rewinding a group on purpose (to reprocess) finds the same
records, so the sessions skip them: replays stay idempotent.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError, OffsetOutOfRangeError

from aigq.errors import ServiceError
from aigq.settings import KafkaSettings

MARK_PREFIX = b"\x00source\x00"  # user ids cannot hold NUL: no session key starts like this


def mark_key(topic: str, partition: int) -> bytes:
    return MARK_PREFIX + f"{topic}/{partition}".encode()


def is_mark(key: bytes | None) -> bool:
    """Whether a table (or changelog) key is a partition mark rather than a user's session."""
    return key is not None and key.startswith(MARK_PREFIX)


def checksum(value: bytes | None) -> int:
    return zlib.crc32(value or b"")


@dataclass(frozen=True, slots=True)
class Mark:
    """The last record applied from one source partition, in its epoch."""

    epoch: int
    offset: int
    ts: int  # the record's Kafka timestamp, ms (0 when it had none)
    crc: int  # CRC-32 of its value

    @classmethod
    def of(cls, message: Any, epoch: int) -> Mark:
        """The mark of a consumed message (Faust's, or anything with ``offset``,
        ``timestamp`` in seconds and ``value``)."""
        stamp = message.timestamp
        return cls(
            epoch, message.offset, int(stamp * 1000) if stamp else 0, checksum(message.value)
        )

    def to_bytes(self) -> bytes:
        return orjson.dumps([self.epoch, self.offset, self.ts, self.crc])

    @classmethod
    def from_bytes(cls, data: bytes) -> Mark:
        epoch, offset, ts, crc = orjson.loads(data)
        return cls(int(epoch), int(offset), int(ts), int(crc))


class Found(Enum):
    SAME = "same"  # the marked record is there: the same log
    OTHER = "other"  # another record, or none where it was: a new incarnation
    UNKNOWN = "unknown"  # the broker no longer holds that offset (retention): cannot tell


def verdict(mark: Mark, record: tuple[int, int, int] | None, start: int) -> Found:
    """Compare a mark with what the broker holds at its offset: ``record`` is the
    ``(offset, ts, crc)`` of the first record found from there (None: the log ends before),
    ``start`` the partition's first offset."""
    if mark.offset < start:
        return Found.UNKNOWN
    if record is None or record[0] != mark.offset:
        return Found.OTHER
    return Found.SAME if record[1:] == (mark.ts, mark.crc) else Found.OTHER


async def read_marked(
    kafka: KafkaSettings, marks: Mapping[TopicPartition, Mark], timeout_s: float = 3.0
) -> dict[TopicPartition, Found]:
    """For each marked partition, whether the broker still holds the marked record."""
    if not marks:
        return {}
    # A plain consumer without a group: it must not join (or disturb) the worker's group.
    consumer = AIOKafkaConsumer(
        **kafka.aiokafka_config(), enable_auto_commit=False, auto_offset_reset="none"
    )
    found: dict[TopicPartition, Found] = {}
    try:
        await consumer.start()
        # Faust's TP is a plain tuple: aiokafka wants its own TopicPartition.
        marks = {TopicPartition(tp.topic, tp.partition): mark for tp, mark in marks.items()}
        tps = list(marks)
        consumer.assign(tps)
        starts = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        waiting: dict[TopicPartition, Mark] = {}
        for tp, mark in marks.items():
            if mark.offset < starts[tp]:
                found[tp] = Found.UNKNOWN
            elif ends[tp] <= starts[tp]:
                found[tp] = Found.OTHER  # an empty log holds no record at all
            else:
                consumer.seek(tp, mark.offset)
                waiting[tp] = mark
        deadline = asyncio.get_running_loop().time() + timeout_s
        while waiting:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                break
            try:
                batch = await consumer.getmany(*waiting, timeout_ms=int(min(left, 1.0) * 1000))
            except OffsetOutOfRangeError as exc:  # the marked offset is past the log's end
                for tp in exc.args[0] if exc.args and isinstance(exc.args[0], dict) else waiting:
                    if tp in waiting:
                        found[tp] = Found.OTHER
                        del waiting[tp]
                        consumer.pause(tp)
                continue
            for tp, records in batch.items():
                if tp in waiting and records:
                    first = records[0]
                    record = (first.offset, first.timestamp or 0, checksum(first.value))
                    found[tp] = verdict(waiting.pop(tp), record, starts[tp])
                    consumer.pause(tp)
        for tp, mark in waiting.items():
            # Nothing came from the marked offset. Past the end the broker reports, the log
            # is shorter than what was applied (tansu reports the start of its last batch + 1,
            # but a record that is there would have come); before it, cannot tell.
            found[tp] = Found.OTHER if mark.offset >= ends[tp] else Found.UNKNOWN
    except KafkaError as exc:
        raise ServiceError(f"cannot read the marked source records: {exc!r}") from exc
    finally:
        await consumer.stop()
    return found


def source_marks(
    tps: Iterable[TopicPartition], get: Mapping[bytes, bytes]
) -> dict[TopicPartition, Mark]:
    """The marks a table holds for ``tps``."""
    out: dict[TopicPartition, Mark] = {}
    for tp in tps:
        data = get.get(mark_key(tp.topic, tp.partition))
        if data is not None:
            out[tp] = Mark.from_bytes(data)
    return out
