"""``aigq generate``'s worker against the real broker, Redis and a vLLM server on the CPU."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition
from redis.asyncio import Redis

from aigq.codec import encode
from aigq.dev.probe import free_port
from aigq.events import RegenerationRequest
from aigq.settings import KafkaSettings, RedisSettings, TopicSettings
from cache.u2q import U2QStore
from generators.settings import GeneratorSettings
from generators.worker import GeneratorWorker

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]
T0 = int(time.time() * 1000) - 5_000


def _request(user: str, version: int) -> RegenerationRequest:
    return RegenerationRequest(
        user_id=user,
        version=version,
        reason="drift",
        shift=0.7,
        event_ts=T0,
        created_ts=T0 + 10,
        fingerprint="fp",
        recent=((T0 - 60_000, "search", f"{user} running shoes", ""),),
        profile=(("t:running", 1.0),),
    )


async def _produce(kafka: KafkaSettings, topic: str, values: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers, enable_idempotence=False)
    await producer.start()
    try:
        for key, value in values:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


async def _eventually(check: Callable[[], Coroutine[Any, Any, bool]], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.3)
    return False


async def _committed_all(kafka: KafkaSettings, group: str, topic: str) -> bool:
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap_servers, group_id=group)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        ends = await consumer.end_offsets(parts)
        for tp in parts:
            committed = await consumer.committed(tp)
            if ends[tp] and (committed or 0) < ends[tp]:
                return False
        return True
    finally:
        await consumer.stop()


def _settings(url: str, prefix: str, **extra: Any) -> GeneratorSettings:
    return GeneratorSettings(
        base_url=url,
        k=5,
        max_tokens=48,
        batch_size=4,
        batch_wait_ms=100,
        cache_prefix=prefix,
        group_id=f"gen-{uuid.uuid4().hex[:6]}",
        **extra,
    )


async def test_worker_writes_newest_runs_logs_results_and_dead_letters(
    kafka: KafkaSettings,
    topics: TopicSettings,
    redis: tuple[Redis, str],
    redis_settings: RedisSettings,
    vllm_server: str,
    read_topics: Any,
) -> None:
    client, prefix = redis
    users = [f"user-{i}" for i in range(6)]
    values = [(u.encode(), encode(_request(u, 3))) for u in users]
    values.append((b"user-0", encode(_request("user-0", 2))))  # older, arrives later
    values.append((b"user-1", encode(_request("user-1", 3))))  # a replay
    values.append((b"bad", b"{not json"))
    await _produce(kafka, topics.name("regenerate"), values)

    settings = _settings(vllm_server, prefix)
    worker = GeneratorWorker(kafka, topics, redis_settings, settings)
    task = asyncio.create_task(worker.run())
    store = U2QStore(client, prefix=prefix)

    async def all_written() -> bool:
        runs = [await store.latest(u) for u in users]
        return all(r is not None for r in runs)

    try:
        assert await _eventually(all_written, 120)
        assert await _eventually(
            lambda: _committed_all(kafka, settings.group_id, topics.name("regenerate")), 30
        )
    finally:
        worker.stop()
        await asyncio.wait_for(task, 30)

    stored = 0  # runs in the cache: 6, or 7 when user-0's v2 landed first (below)
    for user in users:
        runs = await store.runs(user)
        stored += len(runs)
        versions = [r.session_version for r in runs]
        # v3 is on top. The replay of v3 changed nothing. v2 may sit below it: its batch can
        # finish before v3's (two in flight) and then counts as history, never on top.
        assert versions[0] == 3 and versions == sorted(set(versions), reverse=True)
        assert versions in ([3], [3, 2]) if user == "user-0" else versions == [3]
        assert runs[0].model_version == "aigq-direct" and 0 < len(runs[0].queries) <= 5
        assert runs[0].event_ts == T0 and runs[0].generated_ts >= T0
    results = [orjson.loads(r.value) for r in read_topics([topics.name("results")], 6)]
    assert {r["user_id"] for r in results if r["written"]} == set(users)
    assert all(r["type"] == "generated_queries" and r["backend"] == "vllm-http" for r in results)
    letters = [orjson.loads(r.value) for r in read_topics([topics.name("dead_letter")], 1)]
    assert len(letters) == 1 and letters[0]["payload"] == "{not json"
    registry = worker.metrics.registry
    assert registry.get_sample_value("aigq_generate_written_total") == stored
    assert registry.get_sample_value("aigq_generate_freshness_seconds_count") == stored


async def test_worker_keeps_requests_while_the_backend_is_down(
    kafka: KafkaSettings,
    topics: TopicSettings,
    redis: tuple[Redis, str],
    redis_settings: RedisSettings,
    vllm_server: str,
) -> None:
    client, prefix = redis
    users = ["down-a", "down-b", "down-c"]
    await _produce(
        kafka, topics.name("regenerate"), [(u.encode(), encode(_request(u, 1))) for u in users]
    )
    port = free_port()  # the backend's address; nothing listens there yet
    settings = _settings(
        f"http://127.0.0.1:{port}", prefix, retries=1, backoff_s=0.2, backoff_max_s=1.0
    )
    worker = GeneratorWorker(kafka, topics, redis_settings, settings)
    task = asyncio.create_task(worker.run())
    store = U2QStore(client, prefix=prefix)
    upstream = urlsplit(vllm_server)
    server: asyncio.Server | None = None

    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(upstream.hostname, upstream.port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65_536):
                    dst.write(data)
                    await dst.drain()
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def paused() -> bool:
        return worker.paused

    try:
        assert await _eventually(paused, 30)
        await asyncio.sleep(2)
        assert all([await store.latest(u) is None for u in users])
        assert not await _committed_all(kafka, settings.group_id, topics.name("regenerate"))

        server = await asyncio.start_server(forward, "127.0.0.1", port)  # the backend is back

        async def all_written() -> bool:
            return all([await store.latest(u) is not None for u in users])

        assert await _eventually(all_written, 120)
        assert not worker.paused
        assert await _eventually(
            lambda: _committed_all(kafka, settings.group_id, topics.name("regenerate")), 30
        )
    finally:
        worker.stop()
        await asyncio.wait_for(task, 30)
        if server is not None:
            server.close()
    assert (worker.metrics.registry.get_sample_value("aigq_generate_retries_total") or 0) >= 1
