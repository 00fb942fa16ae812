"""``aigq generate``'s worker against the real broker, Redis and a vLLM server on the CPU.

The tests of what the worker does with failures (poison pills, outages, stopping) use
:class:`ScriptedBackend`, a real backend that answers at once and fails as told, so they need
no model; the broker and Redis are the real ones.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from aigq.codec import encode
from aigq.dev.probe import free_port
from aigq.events import RegenerationRequest
from aigq.settings import KafkaSettings, RedisSettings, TopicSettings
from cache.u2q import U2QStore
from generators.backends import Backend, BackendUnavailable
from generators.requests import run_for
from generators.settings import GeneratorSettings
from generators.waits import Stopped
from generators.worker import GeneratorWorker
from tests.generators.conftest import regeneration_request

pytestmark = pytest.mark.asyncio
T0 = int(time.time() * 1000) - 5_000


def _request(user: str, version: int, text: str = "running shoes") -> RegenerationRequest:
    return regeneration_request(user, version, T0, text)


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


def _settings(url: str, **extra: Any) -> GeneratorSettings:
    return GeneratorSettings(
        base_url=url,
        k=5,
        max_tokens=48,
        batch_size=4,
        batch_wait_ms=100,
        group_id=f"gen-{uuid.uuid4().hex[:6]}",
        **extra,
    )


def _keys(redis: RedisSettings, prefix: str) -> RedisSettings:
    """``redis`` with the test's own key prefix (AIGQ_REDIS_KEY_PREFIX)."""
    return redis.model_copy(update={"key_prefix": prefix})


@pytest.mark.integration
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

    settings = _settings(vllm_server)
    worker = GeneratorWorker(kafka, topics, _keys(redis_settings, prefix), settings)
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


@pytest.mark.integration
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
    settings = _settings(f"http://127.0.0.1:{port}", retries=1, backoff_s=0.2, backoff_max_s=1.0)
    worker = GeneratorWorker(kafka, topics, _keys(redis_settings, prefix), settings)
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


# --- failures: poison pills, outages, stopping (no model needed) ----------------------------


class ScriptedBackend(Backend):
    """A real backend without a model: every prompt gets the same list at once. It fails as
    told: while ``down``, every call is an outage and health is false; a prompt holding
    ``explode`` raises ValueError (an error that is not an outage, as a tokenizer's would be);
    while ``health_hangs``, a health check never answers.
    """

    name = "scripted"

    def __init__(self, settings: GeneratorSettings) -> None:
        super().__init__(settings)
        self.down = False
        self.health_hangs = False

    async def complete(self, prompts: Sequence[str]) -> list[list[str]]:
        if self.down:
            raise BackendUnavailable("scripted outage")
        if any("explode" in p for p in prompts):
            raise ValueError("cannot tokenize the prompt")
        return [["trail running shoes\nmerino wool socks\n"] * self.settings.n for _ in prompts]

    async def healthy(self) -> bool:
        if self.health_hangs:
            await asyncio.Event().wait()
        return not self.down


class Outage:
    """A call that fails as an outage (a refused connection) until ``up`` is set."""

    def __init__(self) -> None:
        self.up = asyncio.Event()
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if not self.up.is_set():
            raise ConnectionRefusedError("down")
        return "ok"


def _offline(**settings: Any) -> tuple[GeneratorWorker, ScriptedBackend]:
    """A worker that is never run: its waits are driven directly (no broker, no Redis)."""
    generator = GeneratorSettings(**settings)
    backend = ScriptedBackend(generator)
    worker = GeneratorWorker(
        KafkaSettings(), TopicSettings(), RedisSettings(), generator, backend=backend
    )
    return worker, backend


def _sample(worker: GeneratorWorker, name: str, **labels: str) -> float:
    return worker.metrics.registry.get_sample_value(name, labels or None) or 0.0


@pytest_asyncio.fixture
async def limited_redis(
    redis: tuple[Redis, str], redis_settings: RedisSettings
) -> AsyncIterator[RedisSettings]:
    """Redis as a user that may touch only ``<prefix>u2q:ok-*`` keys (an ACL user made for the
    test and deleted after it): Redis refuses its u2q writes of any other user."""
    client, prefix = redis
    user, password = f"aigq-test-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    await client.acl_setuser(
        user,
        enabled=True,
        passwords=[f"+{password}"],
        commands=["+@all"],
        keys=[f"{prefix}u2q:ok-*"],
    )
    parts = urlsplit(redis_settings.url)
    url = parts._replace(netloc=f"{user}:{password}@{parts.hostname}:{parts.port or 6379}")
    try:
        yield RedisSettings(url=url.geturl())
    finally:
        await client.acl_deluser(user)


@pytest.mark.integration
async def test_poison_pills_are_dead_lettered_committed_and_counted(
    kafka: KafkaSettings,
    topics: TopicSettings,
    redis: tuple[Redis, str],
    limited_redis: RedisSettings,
    read_topics: Any,
) -> None:
    client, prefix = redis
    poison = encode(_request("ok-poison", 1)).replace(b'"version":1', b'"version":%d' % 2**63)
    await _produce(
        kafka,
        topics.name("regenerate"),
        [
            (b"ok-a", encode(_request("ok-a", 1))),
            (b"ok-poison", poison),  # issue 15: it crashed the worker on every restart
            (b"denied", encode(_request("denied", 1))),  # Redis refuses this user's key
            (b"ok-explode", encode(_request("ok-explode", 1, text="explode"))),  # backend error
            (b"ok-b", encode(_request("ok-b", 1))),
        ],
    )
    settings = _settings("http://127.0.0.1:9", retries=0, backoff_s=0.05)
    worker = GeneratorWorker(
        kafka, topics, _keys(limited_redis, prefix), settings, backend=ScriptedBackend(settings)
    )
    task = asyncio.create_task(worker.run())
    try:
        assert await _eventually(
            lambda: _committed_all(kafka, settings.group_id, topics.name("regenerate")), 60
        )
        assert not task.done()  # nothing stopped the worker
        assert not worker.paused  # a refusal is not an outage
    finally:
        worker.stop()
        await asyncio.wait_for(task, 30)

    store = U2QStore(client, prefix=prefix)
    for user in ("ok-a", "ok-b"):
        [run] = await store.runs(user)
        assert (run.session_version, run.watermark_ts) == (1, T0)  # no watermark: event time
    for user in ("ok-poison", "denied", "ok-explode"):
        assert await store.runs(user) == []
    letters = {
        orjson.loads(letter["payload"])["user_id"]: letter
        for letter in (orjson.loads(r.value) for r in read_topics([topics.name("dead_letter")], 3))
    }
    assert sorted(letters) == ["denied", "ok-explode", "ok-poison"]
    assert letters["ok-poison"]["field"] == "version"
    assert "NOPERM" in letters["denied"]["reason"]
    assert "ValueError" in letters["ok-explode"]["reason"]
    for letter in letters.values():
        assert letter["origin"].startswith(f"{topics.name('regenerate')}/")
    assert letters["denied"]["payload"] == encode(_request("denied", 1)).decode()
    results = [orjson.loads(r.value) for r in read_topics([topics.name("results")], 2)]
    assert sorted(r["user_id"] for r in results) == ["ok-a", "ok-b"]
    assert all(r["written"] for r in results)
    dead = "aigq_generate_dead_letters_total"
    assert _sample(worker, dead, reason="invalid") == 1
    assert _sample(worker, dead, reason="cache_refused") == 1
    assert _sample(worker, dead, reason="backend_error") == 1
    assert _sample(worker, "aigq_generate_written_total") == 2
    assert _sample(worker, "aigq_generate_stale_total") == 0


async def test_paused_is_true_while_any_batch_waits() -> None:
    worker, _ = _offline(retries=0, backoff_s=0.01, backoff_max_s=0.02)
    waits_long, waits_briefly, never_waits = Outage(), Outage(), Outage()
    never_waits.up.set()

    async def paused() -> bool:
        return worker.paused

    first = asyncio.create_task(worker.waits.until_up(waits_long, "Redis"))
    assert await _eventually(paused, 5)
    assert await worker.waits.until_up(never_waits, "backend") == "ok"  # another batch succeeds
    assert worker.paused and _sample(worker, "aigq_generate_paused") == 1
    second = asyncio.create_task(worker.waits.until_up(waits_briefly, "Redis"))

    async def second_waits() -> bool:
        return waits_briefly.calls >= 2

    assert await _eventually(second_waits, 5)
    waits_briefly.up.set()
    assert await second == "ok"  # a batch that waited too comes back first
    assert worker.paused and _sample(worker, "aigq_generate_paused") == 1
    assert not first.done()
    waits_long.up.set()
    assert await first == "ok"
    assert not worker.paused and _sample(worker, "aigq_generate_paused") == 0


@pytest.mark.parametrize("retries", [0, 5], ids=["backoff-and-health-polls", "retry-sleeps"])
async def test_stop_ends_every_wait_at_once(retries: int) -> None:
    worker, backend = _offline(retries=retries, backoff_s=30.0, backoff_max_s=60.0)
    backend.down = True
    never = asyncio.Event()

    async def hung() -> str:
        await never.wait()
        return "never"

    waits = [
        asyncio.create_task(worker.waits.until_up(Outage(), "Redis")),
        asyncio.create_task(worker.waits.until_up(lambda: backend.generate(["p"]), "backend")),
        asyncio.create_task(worker.waits.until_up(hung, "backend")),  # a call that never answers
    ]

    async def all_waiting() -> bool:
        if retries:  # both failing calls are in their first retry sleep (or past it)
            return _sample(worker, "aigq_generate_retries_total") >= 2
        return worker.waits.waiting == 2  # both are paused: backoff sleep or health polls

    assert await _eventually(all_waiting, 5)
    backend.health_hangs = True  # and a health poll that never answers
    stopped = time.monotonic()
    worker.stop()
    done, _ = await asyncio.wait(waits, timeout=2)
    assert len(done) == 3 and time.monotonic() - stopped < 2
    assert all(isinstance(w.exception(), Stopped) for w in waits)
    assert not worker.paused and _sample(worker, "aigq_generate_paused") == 0


def _paused_gauge(port: int) -> float | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except (urllib.error.URLError, OSError):
        return None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "aigq_generate_paused":
                return float(sample.value)
    return None


@pytest.mark.integration
async def test_sigterm_stops_aigq_generate_while_the_backend_is_down(
    kafka: KafkaSettings,
    topics: TopicSettings,
    redis: tuple[Redis, str],
    redis_settings: RedisSettings,
    tmp_path: Path,
) -> None:
    _, prefix = redis
    await _produce(kafka, topics.name("regenerate"), [(b"u1", encode(_request("u1", 1)))])
    metrics_port, group = free_port(), f"gen-{uuid.uuid4().hex[:6]}"
    env = {
        **os.environ,
        "AIGQ_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "AIGQ_TOPICS_PREFIX": topics.prefix,
        "AIGQ_REDIS_URL": redis_settings.url,
        "AIGQ_GENERATE_BASE_URL": f"http://127.0.0.1:{free_port()}",  # nothing listens
        "AIGQ_GENERATE_RETRIES": "1",
        "AIGQ_GENERATE_BACKOFF_S": "5",  # long waits: a stop must not sit them out
        "AIGQ_GENERATE_BACKOFF_MAX_S": "30",
        "AIGQ_GENERATE_GROUP_ID": group,
        "AIGQ_REDIS_KEY_PREFIX": prefix,
        "AIGQ_GENERATE_METRICS_PORT": str(metrics_port),
    }
    log = tmp_path / "generate.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "shell", "generate", env=env, stdout=out, stderr=out
        )
    try:

        async def paused() -> bool:
            return await asyncio.to_thread(_paused_gauge, metrics_port) == 1

        assert await _eventually(paused, 60), log.read_text()
        proc.send_signal(signal.SIGTERM)
        try:
            returncode = await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            pytest.fail(f"aigq generate still runs 5 s after SIGTERM:\n{log.read_text()}")
        assert returncode == 0, log.read_text()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    # The waiting batch was not committed: a restart redoes it.
    assert not await _committed_all(kafka, group, topics.name("regenerate"))


class CountingBackend(ScriptedBackend):
    """The scripted backend, remembering every prompt it was given."""

    def __init__(self, settings: GeneratorSettings) -> None:
        super().__init__(settings)
        self.prompts: list[str] = []

    async def complete(self, prompts: Sequence[str]) -> list[list[str]]:
        self.prompts.extend(prompts)
        return await super().complete(prompts)


@pytest.mark.integration
async def test_no_model_call_for_a_superseded_request(
    kafka: KafkaSettings,
    topics: TopicSettings,
    redis: tuple[Redis, str],
    redis_settings: RedisSettings,
) -> None:
    """Issue 17: a request the cache already answered at an equal or newer (watermark,
    version), or one a newer request of the same user in a later batch replaces, gets no model
    call; each is counted by reason."""
    client, prefix = redis
    settings = _settings("http://127.0.0.1:9", retries=0)
    backend = CountingBackend(settings)
    worker = GeneratorWorker(
        kafka, topics, _keys(redis_settings, prefix), settings, backend=backend
    )
    store = U2QStore(client, prefix=prefix)
    written = _request("sup-cached", 5)
    assert await store.write("sup-cached", run_for(written, ["an earlier list"], "m", T0))
    topic = topics.name("regenerate")

    offsets = itertools.count()

    def take_in(*requests: RegenerationRequest) -> dict[TopicPartition, list[Any]]:
        records = [
            SimpleNamespace(topic=topic, partition=0, offset=next(offsets), value=encode(r))
            for r in requests
        ]
        return {TopicPartition(topic, 0): records}

    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers, enable_idempotence=False)
    await producer.start()
    try:
        # Three requests read, one of them superseded at once by a fourth read with it; the
        # batch starts (it reads the cache: a real round trip) and a newer request of one of
        # its users is read while it is in flight.
        await worker._take_in(
            take_in(
                _request("sup-cached", 4),
                _request("sup-gone", 1),
                _request("sup-gone", 2),
                _request("sup-pending", 1),
                _request("sup-new", 1),
            ),
            producer,
        )
        assert len(worker.queue) == 4
        first = asyncio.create_task(worker._handle(worker.queue.take(10), producer, store))
        await asyncio.sleep(0)  # the batch is in its cache read
        await worker._take_in(take_in(_request("sup-pending", 2)), producer)
        await first
        await worker._handle(worker.queue.take(10), producer, store)
    finally:
        await producer.stop()

    asked = [user for user in ("sup-cached", "sup-gone", "sup-pending", "sup-new") for p in
             backend.prompts if f"{user} running shoes" in p]  # fmt: skip
    assert sorted(asked) == ["sup-gone", "sup-new", "sup-pending"]
    assert (await store.latest("sup-pending")).session_version == 2  # type: ignore[union-attr]
    assert (await store.latest("sup-gone")).session_version == 2  # type: ignore[union-attr]
    assert (await store.latest("sup-cached")).session_version == 5  # type: ignore[union-attr]
    for reason, count in (("cached", 1), ("newer_pending", 2)):
        assert _sample(worker, "aigq_generate_superseded_total", reason=reason) == count, reason
    # The superseded offset (1) is done at once; the others once their batch is (not run here).
    assert worker.ledger.committable() == {TopicPartition(topic, 0): 0}


@pytest.mark.integration
async def test_two_generators_share_one_request_topic(
    kafka: KafkaSettings,
    topics: TopicSettings,
    redis: tuple[Redis, str],
    redis_settings: RedisSettings,
) -> None:
    """Issue 17, item 5: two generators in one group split the request topic's partitions;
    every request is answered once by one of them, every user's newest run ends on top, and
    everything is committed."""
    client, prefix = redis
    users = [f"pair-{i}" for i in range(24)]
    values = [(u.encode(), encode(_request(u, v))) for v in (1, 2, 3) for u in users]
    await _produce(kafka, topics.name("regenerate"), values)
    settings = _settings("http://127.0.0.1:9", retries=0)
    workers = [
        GeneratorWorker(
            kafka,
            topics,
            _keys(redis_settings, prefix),
            settings,
            backend=ScriptedBackend(settings),
        )
        for _ in range(2)
    ]
    tasks = [asyncio.create_task(w.run()) for w in workers]
    store = U2QStore(client, prefix=prefix)

    async def newest_on_top() -> bool:
        runs = [await store.latest(u) for u in users]
        return all(r is not None and r.session_version == 3 for r in runs)

    try:
        assert await _eventually(newest_on_top, 90)
        assert await _eventually(
            lambda: _committed_all(kafka, settings.group_id, topics.name("regenerate")), 60
        )
    finally:
        for worker in workers:
            worker.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)

    def total(name: str, **labels: str) -> float:
        return sum(_sample(w, name, **labels) for w in workers)

    answered = sum(total(f"aigq_generate_{n}_total") for n in ("written", "stale", "malformed"))
    answered += sum(
        total("aigq_generate_superseded_total", reason=r)
        for r in ("batch", "newer_pending", "cached")
    )
    # Every request answered (a rebalance may hand a batch to the other generator before its
    # commit: redone, and then answered as stale or cached, never written twice on top).
    assert total("aigq_generate_requests_total") >= len(values)
    assert answered >= len(values)
