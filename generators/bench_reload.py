"""``aigq bench reload``: a model version announced while the generator is under load.

A throwaway broker (the dev stack), a temporary registry holding the shipped model as
``aigq-direct@v0001``, and a :class:`~generators.worker.GeneratorWorker` with the
transformers backend on it (CPU). Regeneration requests (real AOL sessions when the log is
there, else synthetic ones; one user each, so none supersedes another) are produced at a
steady rate; half-way, ``v0002`` is published (a copy of the same folder: the point is the
swap, not the model) and announced on ``<prefix>.models``, as a trainer does. Read back from
``<prefix>.results`` and ``<prefix>.dead_letter``: the lists per model version, malformed
lists, dead letters and requests never answered, and the time from the announcement to the
first list of the new version. Goal: 0 requests failed or dropped across the reload.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from aigq.codec import encode
from aigq.events import RegenerationRequest
from aigq.registry import MANIFEST, ModelRef, Registry
from aigq.settings import KafkaSettings, RedisSettings, TopicSettings
from generators.announce import announce, announcement_for
from generators.settings import GeneratorSettings
from generators.worker import GeneratorWorker

_QUERIES = (
    "running shoes", "weather today", "cheap flights", "pizza near me", "football scores",
    "bank login", "song lyrics", "movie times", "chicken recipes", "jobs hiring", "used cars",
    "maps directions", "hotel deals", "local news", "tax forms", "garden tools",
    "laptop reviews", "yahoo mail", "ebay", "google",
)  # fmt: skip


@dataclass
class ReloadFigures:
    """What came out of one run (see the module doc)."""

    sent: int
    old: str  # the version served at the start, and the one announced half-way
    new: str
    lists: Counter[str] = field(default_factory=Counter)  # results records per model version
    malformed: int = 0
    dead_letters: int = 0
    unanswered: int = 0
    announce_to_new_ms: float | None = None  # announcement -> first list of the new version
    swap_s: float | None = None  # loading the new model and switching to it
    reloads: dict[str, float] = field(default_factory=dict)  # reloads_total by outcome

    @property
    def failed_or_dropped(self) -> int:
        return self.dead_letters + self.unanswered


def synthetic_requests(count: int, seed: int = 0) -> list[RegenerationRequest]:
    """Valid requests with a few searches each, for when no AOL log is at hand."""
    rng, now = random.Random(seed), int(time.time() * 1000)
    out = []
    for i in range(count):
        queries = rng.sample(_QUERIES, 3)
        recent = tuple((now - (3 - j) * 60_000, "search", q, "") for j, q in enumerate(queries))
        words = sorted({w for q in queries for w in q.split()})[:4]
        profile = tuple((f"t:{w}", 1 / len(words)) for w in words)
        out.append(
            RegenerationRequest.model_validate(
                {
                    "user_id": f"synthetic-{i}",
                    "version": 1,
                    "reason": "novel_search",
                    "shift": 0.5,
                    "event_ts": now,
                    "created_ts": now,
                    "fingerprint": "f",
                    "recent": recent,
                    "profile": profile,
                }
            )
        )
    return out


def publish_copy(registry: Registry, source: Path, name: str, parent: str | None) -> ModelRef:
    """A new version of ``name`` holding a copy of the model folder ``source``."""
    ref = registry.reserve(name)
    shutil.copytree(source, ref.path, dirs_exist_ok=True, ignore=shutil.ignore_patterns(MANIFEST))
    manifest = (
        orjson.loads((source / MANIFEST).read_bytes()) if (source / MANIFEST).is_file() else {}
    )
    manifest.update({"parent": parent or manifest.get("parent"), "note": "aigq bench reload"})
    manifest.pop("version", None)
    return registry.publish(ref, manifest)


async def run_reload(
    kafka: KafkaSettings,
    topics: TopicSettings,
    redis: RedisSettings,
    settings: GeneratorSettings,
    registry: Registry,
    requests: Sequence[RegenerationRequest],
    rate_per_s: float,
) -> ReloadFigures:
    """Produce ``requests`` at ``rate_per_s`` through a worker serving ``settings.model``;
    half-way, publish a copy of it as the next version and announce it."""
    worker = GeneratorWorker(kafka, topics, redis, settings, registry=registry)
    source = Path(settings.model)
    figures = ReloadFigures(len(requests), settings.version, "")
    task = asyncio.create_task(worker.run())
    producer = AIOKafkaProducer(**kafka.aiokafka_config(), enable_idempotence=False)
    await producer.start()
    announced: asyncio.Task[int] | None = None
    try:
        await asyncio.sleep(3)  # the group join
        for i, r in enumerate(requests):
            if i == len(requests) // 2:
                announced = asyncio.create_task(
                    asyncio.to_thread(_publish_and_announce, kafka, topics, registry, source)
                )
            now = int(time.time() * 1000)
            fresh = r.model_copy(
                update={"user_id": f"{r.user_id}-{i}"[:128], "event_ts": now, "created_ts": now,
                        "version": 10**6 + i, "ingest_ts": None, "watermark_ts": None}
            )  # fmt: skip
            await producer.send(
                topics.name("regenerate"), encode(fresh), key=fresh.user_id.encode()
            )
            await asyncio.sleep(1 / rate_per_s)
        await producer.flush()
        announce_ts = await announced if announced is not None else 0
        deadline = time.monotonic() + 120 + len(requests) / rate_per_s
        while worker.done < len(requests) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.2)
    finally:
        worker.stop()
        await task
        await producer.stop()
    figures.new = worker.watcher.applied[-1].tag if worker.watcher.applied else "(none)"
    await _read_back(kafka, topics, figures, announce_ts)
    samples = worker.metrics.registry
    for outcome in ("swapped", "current", "ignored", "undecodable", "missing", "unsupported",
                    "failed"):  # fmt: skip
        value = samples.get_sample_value("aigq_generate_reloads_total", {"outcome": outcome})
        if value:
            figures.reloads[outcome] = value
    figures.swap_s = samples.get_sample_value("aigq_generate_reload_seconds_sum")
    return figures


def _publish_and_announce(
    kafka: KafkaSettings, topics: TopicSettings, registry: Registry, source: Path
) -> int:
    """What a trainer does: publish the next version, then announce it. Returns its ts."""
    latest = registry.latest("aigq-direct")
    ref = publish_copy(registry, source, "aigq-direct", latest.tag if latest else None)
    announcement = announcement_for(ref)
    announce(kafka, topics, announcement)
    return announcement.ts


async def _read_back(
    kafka: KafkaSettings, topics: TopicSettings, figures: ReloadFigures, announce_ts: int
) -> None:
    """Every results and dead-letter record, to the end offsets."""
    consumer = AIOKafkaConsumer(**kafka.aiokafka_config(), group_id=None)
    await consumer.start()
    answered: set[str] = set()
    first_new: int | None = None
    try:
        await consumer.topics()  # the partitions' metadata
        parts = [
            TopicPartition(name, p)
            for name in (topics.name("results"), topics.name("dead_letter"))
            for p in consumer.partitions_for_topic(name) or ()
        ]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        left = {tp for tp in parts if ends[tp] > 0}
        while left:
            got = await consumer.getmany(timeout_ms=2_000)
            if not got:
                break
            for tp, records in got.items():
                for m in records:
                    if m.offset >= ends[tp] - 1:
                        left.discard(tp)
                    if tp.topic == topics.name("dead_letter"):
                        figures.dead_letters += 1
                        continue
                    record = orjson.loads(m.value)
                    answered.add(record["user_id"])
                    figures.lists[record["model_version"]] += 1
                    figures.malformed += not record["queries"]
                    if record["model_version"] == figures.new:
                        ts = record["generated_ts"]
                        first_new = ts if first_new is None else min(first_new, ts)
    finally:
        await consumer.stop()
    figures.unanswered = max(figures.sent - len(answered) - figures.dead_letters, 0)
    if first_new is not None and announce_ts:
        figures.announce_to_new_ms = first_new - announce_ts
