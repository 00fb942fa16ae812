"""Replay an event source into Kafka: backfill, demos and benchmarks.

``replay()`` is the pure loop (source items in, records to a sink out, paced by log time);
:class:`KafkaSink` is the kafka-python producer behind it. Events are keyed by ``user_id`` and
sent by one producer with one request in flight, so each user's events keep their order on
their partition even when a send is retried. Malformed source lines become dead letters with
their reason: counted, reported, never fatal.
"""

from __future__ import annotations

import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, Self

from kafka import KafkaProducer
from kafka.errors import KafkaError
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from aigq.codec import dead_letter, encode, event_key
from aigq.datasets import Malformed, SourceItem
from aigq.errors import ServiceError
from aigq.kafka_clients import build
from aigq.settings import KafkaSettings, TopicSettings


class ReplaySettings(BaseSettings):
    """Producer tuning for replay (``AIGQ_REPLAY_*``)."""

    model_config = SettingsConfigDict(env_prefix="AIGQ_REPLAY_", frozen=True, extra="forbid")

    data_dir: Path = Field(Path("../shared/data"), description="holds aol/ and bestbuy/")
    acks: Literal["0", "1", "all"] = Field("all", description="producer acknowledgements")
    linger_ms: int = Field(20, ge=0, description="wait this long to fill a batch")
    batch_size: int = Field(512 * 1024, ge=1024, description="bytes per partition batch")
    max_block_ms: int = Field(60_000, ge=100, description="how long send() may wait for room")
    compression: Literal["none", "gzip"] = Field("none", description="producer compression")
    progress_every: int = Field(5_000, ge=1, description="events between progress callbacks")
    timestamps: Literal["event", "now"] = Field(
        "event",
        description="record timestamps: the event's time (lookups by event time work; old logs "
        "meet time-based retention at once on a real cluster) or the time of sending",
    )


class Sink(Protocol):
    def send(
        self, topic: str, key: bytes | None, value: bytes, timestamp_ms: int | None = None
    ) -> None: ...
    def flush(self) -> None: ...


@dataclass
class ReplayReport:
    produced: Counter[str] = field(default_factory=Counter)  # per topic
    malformed: int = 0
    failed: int = 0  # sends the broker never acknowledged
    elapsed_s: float = 0.0
    last_ts: int | None = None

    @property
    def events(self) -> int:
        return sum(self.produced.values()) - self.produced.get("dead_letter", 0)

    @property
    def events_per_s(self) -> float:
        return self.events / self.elapsed_s if self.elapsed_s > 0 else 0.0


def parse_speed(text: str) -> float | None:
    """``"max"`` → None (no pacing); ``"60"`` → 60.0 (one log minute per wall second)."""
    if text.strip().lower() == "max":
        return None
    try:
        speed = float(text)
    except ValueError:
        raise ValueError(f"speed must be 'max' or a positive number, got {text!r}") from None
    if not speed > 0 or speed == float("inf"):
        raise ValueError(f"speed must be 'max' or a positive number, got {text!r}")
    return speed


@dataclass
class Pacer:
    """Maps log time to wall time at ``speed``x; ``speed=None`` never waits."""

    speed: float | None
    _origin: tuple[int, float] | None = None  # (first event ts ms, wall clock s at it)

    def delay(self, ts_ms: int, now_s: float) -> float:
        """Seconds to wait before sending an event stamped ``ts_ms``, if the wall clock is now_s."""
        if self.speed is None:
            return 0.0
        if self._origin is None:
            self._origin = (ts_ms, now_s)
            return 0.0
        first_ts, first_wall = self._origin
        due = first_wall + (ts_ms - first_ts) / 1000.0 / self.speed
        return max(0.0, due - now_s)


@dataclass(frozen=True)
class Shard:
    """Worker ``index`` of ``count`` sends only the users that hash to it (and, for worker 0,
    the dead letters). The hash is CRC-32 of the user id: stable across processes and runs."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index} of {self.count} does not exist")

    def owns(self, user_id: str) -> bool:
        return self.count == 1 or zlib.crc32(user_id.encode()) % self.count == self.index


def replay(
    items: Iterable[SourceItem],
    sink: Sink,
    topics: TopicSettings,
    speed: float | None = None,
    limit: int | None = None,
    on_progress: Callable[[ReplayReport], None] | None = None,
    progress_every: int = 5_000,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    shard: Shard = Shard(),
    event_time: bool = True,
    stream: str | None = None,
) -> ReplayReport:
    """Send ``items`` to ``sink`` until exhausted or ``limit`` events of the stream are read.

    With a ``shard``, every worker walks the same stream but sends only its own users, so the
    workers together send exactly the first ``limit`` events, paced by the same log clock.
    With ``event_time`` each record's Kafka timestamp is its event's ``ts`` (so offsets can be
    looked up by event time, as ``aigq backfill`` does); else the broker's clock.
    With a ``stream`` name each event gets the id ``<stream>/<type>#<n>``, ``n`` counting that
    user's events of that type in the stream from 0 (the same in every shard and every run): the
    session worker applies each once, so replaying the same data twice counts every event once.
    The count is per type because each type has a topic of its own, and a worker reads its
    topics independently: only within one type is a user's order kept.
    """
    report = ReplayReport()
    pacer = Pacer(speed)
    dead_topic = topics.name("dead_letter")
    names = {kind: topics.name(kind) for kind in ("search", "click", "hint_exposure", "hint_click")}
    seen = 0  # events of the whole stream, this shard's or not
    numbers: Counter[tuple[str, str]] = Counter()  # per user and type: the n of the event ids
    started = clock()
    for item in items:
        if isinstance(item, Malformed):
            if shard.index == 0 and (limit is None or seen < limit):
                report.malformed += 1
                sink.send(dead_topic, None, encode(dead_letter(item.origin, item.raw, item.reason)))
                report.produced["dead_letter"] += 1
            continue
        if limit is not None and seen >= limit:
            break
        seen += 1
        if not shard.owns(item.user_id):
            continue
        wait = pacer.delay(item.ts, clock())
        if wait > 0:
            sleep(wait)
        stamp = item.ts if event_time else None
        if stream is not None:
            n = numbers[item.user_id, item.type]
            numbers[item.user_id, item.type] = n + 1
            item = item.model_copy(update={"event_id": f"{stream}/{item.type}#{n}"})
        sink.send(names[item.type], event_key(item), encode(item), stamp)
        report.produced[item.type] += 1
        report.last_ts = item.ts
        if on_progress is not None and report.events % progress_every == 0:
            report.elapsed_s = clock() - started
            on_progress(report)
    sink.flush()
    report.elapsed_s = clock() - started
    return report


class KafkaSink:
    """kafka-python producer as a :class:`Sink`; counts sends the broker did not acknowledge."""

    def __init__(self, kafka: KafkaSettings, settings: ReplaySettings) -> None:
        self._producer = build(
            KafkaProducer,
            f"Kafka at {kafka.bootstrap_servers}",
            **kafka.kafka_python_config(),
            acks=settings.acks if settings.acks == "all" else int(settings.acks),
            linger_ms=settings.linger_ms,
            batch_size=settings.batch_size,
            max_block_ms=settings.max_block_ms,
            compression_type=None if settings.compression == "none" else settings.compression,
            # kafka-python 3 turns idempotence on by default; tansu (and some managed
            # clusters) refuse it, so replay is at-least-once. One request in flight keeps
            # each partition's order through retries without it.
            enable_idempotence=False,
            max_in_flight_requests_per_connection=1,
            retries=5,
            # The client's own per-send sensors cost more CPU than the sends themselves.
            metrics_enabled=False,
        )
        self.failed = 0
        self.first_error: str | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def send(
        self, topic: str, key: bytes | None, value: bytes, timestamp_ms: int | None = None
    ) -> None:
        try:
            future = self._producer.send(topic, key=key, value=value, timestamp_ms=timestamp_ms)
            future.add_errback(self._on_error)
        except KafkaError as exc:
            raise ServiceError(f"cannot send to {topic}: {exc}") from exc

    def _on_error(self, exc: BaseException) -> None:
        self.failed += 1
        if self.first_error is None:
            self.first_error = repr(exc)

    def flush(self) -> None:
        try:
            self._producer.flush()
        except KafkaError as exc:
            raise ServiceError(f"flush failed: {exc}") from exc

    def close(self) -> None:
        self._producer.close()
