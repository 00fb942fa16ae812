"""Hot reload: which announcement applies, backends that swap their model, and a generator
that swaps under load without failing or dropping a request (real broker, Redis, model)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from aigq.codec import encode
from aigq.dev.probe import free_port
from aigq.events import ModelAnnouncement, RegenerationRequest
from aigq.registry import SHIPPED, Registry
from aigq.settings import KafkaSettings, RedisSettings, TopicSettings
from generators.announce import announce, announcement_for
from generators.backends import ReloadFailed, ReloadUnsupported, open_backend
from generators.backends.openai_http import OpenAIHttpBackend, adapter_name
from generators.bench_reload import publish_copy
from generators.reload import decide, locate, newest
from generators.requests import prompt_for
from generators.settings import GeneratorSettings
from generators.worker import GeneratorWorker
from tests.generators.conftest import regeneration_request

T0 = int(time.time() * 1000) - 5_000


def _announced(version: str, ts: int, kind: str = "generator", name: str = "m") -> Any:
    return ModelAnnouncement.model_validate(
        {"kind": kind, "name": name, "version": version, "ts": T0 + ts}
    )


def _request(user: str, version: int = 1) -> RegenerationRequest:
    return regeneration_request(user, version, T0)


# --- which announcement applies (pure) -----------------------------------------------------


def test_only_a_generator_announcement_of_the_served_name_and_another_version_applies() -> None:
    assert decide(_announced("v0002", 1), "m", "m@v0001") is None
    assert decide(_announced("v0001", 1), "m", "m@v0001") == "current"
    assert decide(_announced("v0002", 1, kind="ctr"), "m", "m@v0001") == "ignored"
    assert decide(_announced("v0002", 1, name="other"), "m", "m@v0001") == "ignored"
    # a rollback names an older version: it applies like any other
    assert decide(_announced("v0001", 9), "m", "m@v0003") is None


def test_the_newest_announcement_is_the_last_one_for_this_generator() -> None:
    records = [
        _announced("v0001", 10),
        _announced("v0003", 30),
        _announced("v0002", 20),
        _announced("v0009", 90, kind="ctr"),
        _announced("v0008", 80, name="other"),
    ]
    found = newest(records, "m")
    assert found is not None and found.version == "v0003"
    assert newest(records[3:], "m") is None
    assert newest([], "m") is None


def test_a_version_is_found_in_the_registry_else_at_its_announced_path(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "reg", shipped=None)
    mine = registry.publish(registry.reserve("m"), {})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert locate(_announced("v0001", 1), registry) == mine.path
    moved = _announced("v0002", 1).model_copy(update={"path": str(elsewhere)})
    assert locate(moved, registry) == elsewhere
    gone = _announced("v0002", 1).model_copy(update={"path": str(tmp_path / "nowhere")})
    assert locate(gone, registry) is None
    assert locate(_announced("v0002", 1), registry) is None  # no path announced


# --- backends that swap -------------------------------------------------------------------


@pytest.mark.asyncio
async def test_transformers_swap_between_batches_and_a_failed_load_keeps_the_model(
    tmp_path: Path,
) -> None:
    settings = GeneratorSettings(
        backend="transformers", model=str(SHIPPED), model_version="m@v0001", max_tokens=12, k=3
    )
    prompts = [prompt_for(_request("a"), k=3), prompt_for(_request("b"), k=3)]
    async with open_backend(settings) as backend:
        assert backend.model_version == "m@v0001"
        # A batch in flight (it holds the lock while the model loads and generates) finishes on
        # the model it started with, while the swap loads the new one beside it.
        in_flight = asyncio.create_task(backend.generate_versioned(prompts))
        await asyncio.sleep(0)
        await backend.swap(SHIPPED, "m@v0002")
        first = await in_flight
        assert first.version == "m@v0001" and len(first.lists) == 2
        assert (await backend.generate_versioned(prompts)).version == "m@v0002"
        with pytest.raises(ReloadFailed):
            await backend.swap(tmp_path / "not-a-model", "m@v0003")
        assert backend.model_version == "m@v0002"
        after = await backend.generate_versioned(prompts)
        assert after.version == "m@v0002" and len(after.lists) == 2


@pytest.mark.asyncio
async def test_vllm_server_swaps_adapters_only() -> None:
    settings = GeneratorSettings(base_url=f"http://127.0.0.1:{free_port()}", timeout_s=2)
    async with OpenAIHttpBackend(settings) as backend:
        with pytest.raises(ReloadUnsupported, match="restart the server"):
            await backend.swap(Path("/models/m/v0002"), "m@v0002", adapter=False)
        with pytest.raises(ReloadFailed):  # nothing listens there
            await backend.swap(Path("/models/m/v0002"), "m@v0002", adapter=True)
        assert backend.model_version == settings.version
        assert backend.payload(["p"])["model"] == settings.model
    assert adapter_name("aigq-direct@v0002") == "aigq-direct-v0002"


# --- a generator under load swaps without failing or dropping a request ----------------------


async def _produce(kafka: KafkaSettings, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers, enable_idempotence=False)
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


async def _until(check: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.2)


@pytest.mark.integration
@pytest.mark.asyncio
async def test_a_generator_under_load_swaps_to_the_announced_version(
    kafka: KafkaSettings,
    topics: TopicSettings,
    redis: tuple[Redis, str],
    redis_settings: RedisSettings,
    read_topics: Any,
    tmp_path: Path,
) -> None:
    registry = Registry(tmp_path / "registry", shipped=None)
    v1 = publish_copy(registry, SHIPPED, "aigq-direct", parent="shipped")
    settings = GeneratorSettings(
        backend="transformers", model=str(v1.path), model_version=v1.tag, k=5, max_tokens=16,
        batch_size=4, batch_wait_ms=50, group_id=f"reload-{uuid.uuid4().hex[:6]}",
    )  # fmt: skip
    keys = redis_settings.model_copy(update={"key_prefix": redis[1]})
    worker = GeneratorWorker(kafka, topics, keys, settings, registry=registry)
    task = asyncio.create_task(worker.run())
    regenerate = topics.name("regenerate")

    def batch(label: str) -> list[tuple[bytes, bytes]]:
        users = [f"{label}-{i}" for i in range(6)]
        return [(u.encode(), encode(_request(u))) for u in users]

    try:
        await _produce(kafka, regenerate, batch("before"))
        await _until(lambda: worker.done >= 6 and worker.watcher.following, 60)
        # Not for this generator, or not an announcement at all: counted, and nothing changes.
        other = announcement_for(v1, kind="ctr")
        await _produce(kafka, topics.name("models"), [(b"x", b"{garbage"), (b"c", encode(other))])
        v2 = publish_copy(registry, v1.path, "aigq-direct", parent=v1.tag)
        await asyncio.to_thread(announce, kafka, topics, announcement_for(v2))
        await _produce(kafka, regenerate, batch("during"))  # while it loads and swaps
        await _until(lambda: worker.backend.model_version == v2.tag, 60)
        await _produce(kafka, regenerate, batch("after"))
        await _until(lambda: worker.done >= 18, 60)
    finally:
        worker.stop()
        await asyncio.wait_for(task, 30)

    records = read_topics([topics.name("results"), topics.name("dead_letter")], 18)
    assert all(r.topic == topics.name("results") for r in records)  # no dead letter
    results = [orjson.loads(r.value) for r in records]
    by_user = {r["user_id"]: r["model_version"] for r in results}
    assert len(results) == 18 and len(by_user) == 18  # every request answered, once
    for user, version in by_user.items():
        if user.startswith("before"):
            assert version == v1.tag
        elif user.startswith("after"):
            assert version == v2.tag
        else:
            assert version in (v1.tag, v2.tag)
    samples = worker.metrics.registry
    for outcome, count in (("swapped", 1), ("ignored", 1), ("undecodable", 1), ("failed", None)):
        assert samples.get_sample_value("aigq_generate_reloads_total", {"outcome": outcome}) == (
            count
        )
    assert samples.get_sample_value("aigq_generate_model_version", {"version": v2.tag}) == 1
    assert samples.get_sample_value("aigq_generate_model_version", {"version": v1.tag}) is None
