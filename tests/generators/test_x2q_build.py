"""``aigq x2q build`` against the real Redis, broker and the shipped Think model: a build that
stops half way resumes into the same version, readers see nothing of it until the switch, the
read path then serves x2q for a fresh trigger, and the topics source counts every record."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer
from redis.asyncio import Redis

from aigq.datasets import Malformed
from aigq.datasets.synthetic import DAY_MS, SyntheticConfig, generate
from aigq.events import ClickEvent, HintClickEvent, SearchEvent
from aigq.redis_clients import delete_prefix, open_redis
from aigq.settings import KafkaSettings, RedisSettings, TopicSettings
from cache.hints import HintClient
from cache.popular import PopularQueries
from cache.recent import RecentTriggers
from cache.settings import HintSettings
from cache.u2q import U2QRun, U2QStore
from generators.backends.hf import TransformersBackend
from generators.settings import GeneratorSettings
from generators.x2q_build import BuildConfig, BuildReport, Checkpoint, build_index, trigger_text
from generators.x2q_topics import read_window
from generators.x2q_triggers import collect
from streams.replay import KafkaSink, ReplaySettings, replay

pytestmark = [pytest.mark.integration]

THINK = Path(__file__).resolve().parents[2] / "models" / "aigq-think"
WORLD = SyntheticConfig(users=12, days=3, seed=5)
SINCE, UNTIL = WORLD.start_ms + DAY_MS, WORLD.start_ms + 3 * DAY_MS


class Stop(Exception):
    """What the test raises to stop a build half way (as a killed pod would stop)."""


def _events() -> list[Any]:
    return [i for i in generate(WORLD) if not isinstance(i, Malformed)]


def _backend(n: int = 1, temperature: float = 0.0) -> TransformersBackend:
    settings = GeneratorSettings(
        backend="transformers", model=str(THINK), model_version="aigq-think@test", k=10,
        max_tokens=64, n=n, temperature=temperature, structured=False, reload=False,
    )  # fmt: skip
    return TransformersBackend(settings)


@pytest.mark.asyncio
async def test_a_build_resumes_switches_atomically_and_serves_fresh_triggers(
    redis: tuple[Redis, str], redis_settings: RedisSettings
) -> None:
    from cache.x2q import X2QStore

    client, prefix = redis
    triggers, popularity = collect(_events(), SINCE, UNTIL)
    triggers = triggers[:24]
    config = BuildConfig(batch_size=8, popular=20, model_version="aigq-think@test")
    store = X2QStore(client, prefix, ttl_s=600, grace_s=30)
    checkpoint = Checkpoint(client, prefix)
    seen: list[int] = []

    def stop_after_two(done: int, total: int, report: BuildReport) -> None:
        seen.append(done)
        if done >= 16:
            raise Stop

    async with _backend() as backend, _backend(4, 0.8) as retry:
        with pytest.raises(Stop):
            await build_index(triggers, popularity, backend, store, checkpoint, config,
                              progress=stop_after_two, retry=retry)  # fmt: skip
        assert seen == [0, 8, 16]
        assert await store.current() is None  # half a build is never served
        state = await checkpoint.load()
        assert state is not None and state["done"] == 16

        report = await build_index(triggers, popularity, backend, store, checkpoint, config,
                                   popular=PopularQueries(client, prefix),
                                   retry=retry)  # fmt: skip
    assert report.resumed_at == 16 and report.version == state["version"]
    assert report.covered + report.no_queries == 8  # only the rest was generated
    assert report.rescued <= report.retried <= 8
    assert await store.current() == report.version and report.previous is None
    assert await checkpoint.load() is None
    assert report.popular == min(20, len(popularity.counts))

    found = await store.lookup([(t.kind, trigger_text(t)) for t in triggers])
    covered = [t for t, queries in zip(triggers, found, strict=True) if queries]
    assert len(covered) >= 0.9 * len(triggers), report.as_dict()  # the shipped Think model
    assert all(len(q) <= config.keep for q in found)

    # A user whose newest u2q run is older than their click: the read path serves the click's
    # x2q queries (the composition's rule for a fresh trigger) beside the run's.
    trigger = covered[0]
    now = int(time.time() * 1000)
    run = U2QRun(("an older run query",), "aigq-direct@test", 1, now - 60_000, now - 60_000)
    await U2QStore(client, prefix=prefix).write("fresh-user", run)
    await RecentTriggers(client, prefix).record_many(
        [("fresh-user", trigger.kind, trigger_text(trigger), now)]
    )
    async with HintClient(
        redis_settings.model_copy(update={"key_prefix": prefix}), HintSettings(history=0)
    ) as hints:
        result = await hints.hints("fresh-user", k=5)
    sources = [h.source for h in result.hints]
    assert sources[0] == "x2q" and "u2q" in sources, result.hints
    assert result.hints[0].trigger == trigger.member


def test_the_topics_source_reads_its_window_and_counts_what_it_skips(
    kafka: KafkaSettings, topics: TopicSettings
) -> None:
    items = _events()
    with KafkaSink(kafka, ReplaySettings(linger_ms=5)) as sink:
        replay(items, sink, topics)  # record timestamps are the events' times
    producer = KafkaProducer(**kafka.kafka_python_config(), enable_idempotence=False)
    producer.send(topics.name("search"), b"{not json", timestamp_ms=SINCE + 1)  # poison
    producer.flush()
    producer.close()

    events, counts = read_window(kafka, topics, SINCE, UNTIL)
    wanted = [
        e for e in items
        if SINCE <= e.ts < UNTIL and isinstance(e, SearchEvent | ClickEvent | HintClickEvent)
    ]  # fmt: skip
    assert counts["kept"] == len(events) == len(wanted) > 0
    assert counts["undecodable"] == 1
    assert counts["outside"] > 0  # read from the start (the local broker), filtered by time
    assert sorted(e.ts for e in events) == [e.ts for e in events]


def test_the_command_builds_from_a_log_and_reports(
    tmp_path: Path, redis_settings: RedisSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from shell.cli import app

    prefix = f"test:{uuid.uuid4().hex}:"
    monkeypatch.setenv("AIGQ_REDIS_URL", redis_settings.url)
    monkeypatch.setenv("AIGQ_REDIS_KEY_PREFIX", prefix)
    report = tmp_path / "x2q.json"
    args = ["x2q", "build", "--source", "synthetic", "--days", "2", "--max-triggers", "16",
            "--model", str(THINK), "--report", str(report)]  # fmt: skip
    try:
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        figures = json.loads(report.read_text())
        assert figures["triggers"] == 16 and figures["version"] == "v000001"
        assert figures["covered"] + figures["no_queries"] == 16
        assert figures["read"]["kept"] > 0 and figures["popular"] > 0
        assert "is live" in result.output
        assert asyncio.run(_current(redis_settings, prefix)) == "v000001"
    finally:
        asyncio.run(delete_prefix(redis_settings, prefix))


async def _current(settings: RedisSettings, prefix: str) -> str | None:
    from cache.x2q import X2QStore

    client = open_redis(settings)
    try:
        return await X2QStore(client, prefix).current()
    finally:
        await client.aclose()
