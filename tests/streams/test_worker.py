"""The session worker against the real broker: SIGKILL recovery, dead letters, endpoints."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from aigq.codec import encode
from aigq.datasets import Malformed
from aigq.datasets.synthetic import SyntheticConfig, generate
from aigq.dev.probe import wait_until
from aigq.events import EVENT_TYPES, ClickEvent, RegenerationRequest, SearchEvent
from aigq.redis_clients import open_redis
from aigq.settings import KafkaSettings, RedisSettings, TopicSettings
from cache.history import fold, top_queries
from cache.history_store import HistoryStore
from cache.recent import RecentTriggers
from tests.streams.worker_proc import Worker, _latest_states, _produce

pytestmark = pytest.mark.integration
WORLD = SyntheticConfig(users=60, days=6, seed=21)


def _source_records(kafka: KafkaSettings, topics: TopicSettings) -> list[Any]:
    """Every record of the event topics."""
    consumer = KafkaConsumer(**kafka.kafka_python_config(), enable_auto_commit=False)
    try:
        parts = [
            TopicPartition(topics.name(kind), p)
            for kind in EVENT_TYPES
            for p in sorted(consumer.partitions_for_topic(topics.name(kind)) or ())
        ]
        consumer.assign(parts)
        consumer.seek_to_beginning()
        ends = consumer.end_offsets(parts)
        records: list[Any] = []
        deadline = time.monotonic() + 20
        while any(consumer.position(tp) < ends[tp] for tp in parts) and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=300).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


def _committed(kafka: KafkaSettings, group: str, topics: TopicSettings) -> dict[str, int | None]:
    """The group's committed offset of every event-topic partition, as ``"topic/partition"``."""
    consumer = KafkaConsumer(
        **kafka.kafka_python_config(), group_id=group, enable_auto_commit=False
    )
    try:
        return {
            f"{topics.name(kind)}/{p}": consumer.committed(TopicPartition(topics.name(kind), p))
            for kind in EVENT_TYPES
            for p in sorted(consumer.partitions_for_topic(topics.name(kind)) or ())
        }
    finally:
        consumer.close()


def _expected_counts(items: list[Any]) -> dict[str, Counter[str]]:
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for item in items:
        if not isinstance(item, Malformed):
            counts[item.user_id][item.type] += 1
    return counts


def test_sigkill_mid_stream_then_restart_loses_and_doubles_nothing(
    kafka: KafkaSettings, topics: TopicSettings, workers: list[Worker], tmp_path: Path
) -> None:
    items = list(generate(WORLD))
    total = sum(not isinstance(i, Malformed) for i in items)
    half = len(items) // 2
    app_id = f"recovery-{uuid.uuid4().hex[:6]}"
    changelog = f"{app_id}-sessions-changelog"

    _produce(kafka, topics, items[:half])
    first = Worker(kafka, topics, app_id, tmp_path)
    workers.append(first)
    first.start()
    # Kill it for real while it is busy: some of the first half applied, not necessarily flushed.
    assert wait_until(lambda: first.processed() > 500, timeout_s=60), first.log.read_text()[-2000:]
    _produce(kafka, topics, items[half:])
    assert first.stop(signal.SIGKILL) == -signal.SIGKILL

    second = Worker(kafka, topics, app_id, tmp_path)
    workers.append(second)
    second.start()

    def caught_up() -> bool:
        states, _ = _latest_states(kafka, changelog)
        return sum(s.version for s in states.values()) >= total

    assert wait_until(caught_up, timeout_s=90, every_s=1.0), second.log.read_text()[-2000:]
    states, monotonic = _latest_states(kafka, changelog)
    expected = _expected_counts(items)
    assert monotonic
    assert set(states) == set(expected)
    for user, session in states.items():
        assert Counter(session.counts) == expected[user], user
        assert session.version == sum(expected[user].values())
    assert second.stop() == 0


def test_worker_endpoints_requests_dead_letters_and_recent_triggers(
    kafka: KafkaSettings,
    topics: TopicSettings,
    workers: list[Worker],
    tmp_path: Path,
    read_topics: Any,
    redis_settings: RedisSettings,
) -> None:
    items = list(generate(SyntheticConfig(users=8, days=2, seed=5)))
    users = {i.user_id for i in items if not isinstance(i, Malformed)}
    _produce(kafka, topics, items)
    producer = KafkaProducer(**kafka.kafka_python_config(), enable_idempotence=False)
    bad = [b"{not json", b"\xff\xfe", orjson.dumps({"type": "search", "user_id": "u", "ts": 5})]
    bad.append(encode(items[0]).replace(b"}", b', "padding": "' + b"x" * 4096 + b'"}'))
    for value in bad:
        producer.send(topics.name("search"), key=b"bad", value=value)
    producer.flush()
    producer.close()

    prefix = f"test:{uuid.uuid4().hex}:"
    env = {
        "AIGQ_REDIS_URL": redis_settings.url,
        "AIGQ_STREAM_RECENT_TRIGGERS": "true",
        "AIGQ_STREAM_HISTORY": "true",
        "AIGQ_REDIS_KEY_PREFIX": prefix,
    }
    worker = Worker(kafka, topics, f"endpoints-{uuid.uuid4().hex[:6]}", tmp_path, env)
    workers.append(worker)
    worker.start()
    assert wait_until(lambda: worker.get("/ready")[0] == 200, timeout_s=60), worker.log.read_text()
    letters = read_topics([topics.name("dead_letter")], len(bad))
    reasons = sorted(orjson.loads(r.value)["reason"] for r in letters)
    assert len(reasons) == len(bad)
    assert any("not valid JSON" in r for r in reasons)
    assert any("epoch milliseconds" in r for r in reasons)
    assert any("the limit is 2048" in r for r in reasons)
    origins = {orjson.loads(r.value)["origin"].split("@")[0] for r in letters}
    assert all(o.startswith(topics.name("search") + "/") for o in origins)

    requests = read_topics([topics.name("regenerate")], len(users))
    requested = {RegenerationRequest.model_validate_json(r.value).user_id for r in requests}
    assert requested == users  # every user's first behaviour is a cold start

    status, body = worker.get("/metrics")
    text = body.decode()
    assert status == 200
    assert f'aigq_stream_decisions_total{{outcome="cold_start"}} {len(users)}.0' in text
    assert 'aigq_stream_decisions_total{outcome="dead_letter"} 4.0' in text
    assert "aigq_stream_consumer_lag{" in text
    assert worker.stop() == 0

    # Each user's newest search, clicked item and category are in the read API's Redis set.
    last: dict[tuple[str, str], str] = {}
    for item in items:
        if isinstance(item, SearchEvent):
            last[item.user_id, "query"] = item.query.lower()
        elif isinstance(item, ClickEvent):
            last[item.user_id, "item"] = item.item_id.lower()

    async def recent() -> tuple[dict[str, list[Any]], dict[str, list[str]]]:
        client = open_redis(redis_settings)
        try:
            store = RecentTriggers(client, prefix=prefix, keep=50)
            out = {user: await store.latest(user) for user in users}
            history = HistoryStore(client, prefix=prefix)
            searched = {user: await history.read(user) for user in users}
            keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
            if keys:
                await client.delete(*keys)
            return out, searched
        finally:
            await client.aclose()

    stored, histories = asyncio.run(recent())
    for (user, kind), text in last.items():
        assert any(t.kind == kind and t.text == text for t in stored[user]), (user, kind, text)
    # Each user's search history, the top of the same fold the session keeps, is there too.
    searches: defaultdict[str, list[tuple[str, int]]] = defaultdict(list)
    for item in items:
        if isinstance(item, SearchEvent):
            searches[item.user_id].append((item.query, item.ts))
    assert searches
    for user in users:
        assert histories[user] == top_queries(fold(searches[user]), 20), user


def test_restart_recovers_every_state_of_a_batched_changelog(
    kafka: KafkaSettings, topics: TopicSettings, workers: list[Worker], tmp_path: Path
) -> None:
    """Flushes write many states per changelog batch. The local broker reports a partition's end
    offset as the start of its last batch + 1, so a restarted worker recovers exactly only if
    every flush ends each partition with a batch of one record (the worker's seal). A state lost
    in recovery shows as a short count once that user's next event is applied on top of it."""
    items: list[Any] = [i for i in generate(WORLD) if not isinstance(i, Malformed)]
    app_id = f"batched-{uuid.uuid4().hex[:6]}"
    changelog = f"{app_id}-sessions-changelog"

    def applied(count: int) -> Callable[[], bool]:
        return lambda: sum(s.version for s in _latest_states(kafka, changelog)[0].values()) >= count

    _produce(kafka, topics, items)
    first = Worker(kafka, topics, app_id, tmp_path)
    workers.append(first)
    first.start()
    assert wait_until(applied(len(items)), timeout_s=90, every_s=1.0), first.log.read_text()[-2000:]
    assert first.stop() == 0  # a clean stop: its last flush is sealed
    # It applied everything, so it committed exactly every partition's end: no more, no less.
    ends: dict[str, int | None] = {part: None for part in _committed(kafka, app_id, topics)}
    for record in _source_records(kafka, topics):
        ends[f"{record.topic}/{record.partition}"] = record.offset + 1
    assert _committed(kafka, app_id, topics) == ends

    last_ts = max(i.ts for i in items)
    more = [
        SearchEvent(user_id=user, ts=last_ts + 1_000, query="one more query")
        for user in sorted({i.user_id for i in items})
    ]
    _produce(kafka, topics, more)
    second = Worker(kafka, topics, app_id, tmp_path)
    workers.append(second)
    second.start()
    total = len(items) + len(more)
    reached = wait_until(applied(total), timeout_s=90, every_s=1.0)
    states, monotonic = _latest_states(kafka, changelog)
    expected = _expected_counts(items + more)
    wrong = {
        user: (dict(session.counts), dict(expected[user]))
        for user, session in states.items()
        if Counter(session.counts) != expected[user]
    }
    assert reached and not wrong, (
        f"{len(wrong)} users wrong of {len(states)}, e.g. {list(wrong.items())[:3]}; "
        f"second worker processed {second.processed()}; {second.log.read_text()[-2000:]}"
    )
    assert monotonic
    assert second.stop(signal.SIGKILL) == -signal.SIGKILL


def test_a_flush_killed_before_its_seal_is_recovered_whole(
    kafka: KafkaSettings, topics: TopicSettings, workers: list[Worker], tmp_path: Path
) -> None:
    """A worker killed between a flush's batched state writes and their seal leaves changelog
    partitions ending in batches of several records; the local broker reports each such end as
    the batch's start + 1, where Faust's recovery stops. The next worker reads each partition's
    last batch after recovery (streams.tails), so it recovers those batches whole. Here the
    unsealed batches hold states three searches ahead of the source topics (what a killed flush
    wrote for events that are then not sent again), so a state recovered short shows as three
    searches missing; and the versions it writes on top go down in the changelog, as the
    hostile run saw."""
    items: list[Any] = [i for i in generate(WORLD) if not isinstance(i, Malformed)]
    app_id = f"unsealed-{uuid.uuid4().hex[:6]}"
    changelog = f"{app_id}-sessions-changelog"
    _produce(kafka, topics, items)
    first = Worker(kafka, topics, app_id, tmp_path)
    workers.append(first)
    first.start()

    def applied(count: int) -> Callable[[], bool]:
        return lambda: sum(s.version for s in _latest_states(kafka, changelog)[0].values()) >= count

    assert wait_until(applied(len(items)), timeout_s=90, every_s=1.0), first.log.read_text()[-2000:]
    assert first.stop() == 0

    # The killed flush: every user's state, three searches on, in one batch per partition.
    states, _ = _latest_states(kafka, changelog)
    producer = KafkaProducer(
        **kafka.kafka_python_config(),
        enable_idempotence=False,
        linger_ms=1_000,
        batch_size=1 << 20,
    )
    for user, session in states.items():
        session.counts["search"] = session.counts.get("search", 0) + 3
        session.version += 3
        producer.send(changelog, key=user.encode(), value=session.to_bytes())
    producer.flush()
    producer.close()

    more = [
        SearchEvent(user_id=user, ts=max(i.ts for i in items) + 1_000, query="one more query")
        for user in sorted(states)
    ]
    _produce(kafka, topics, more)
    second = Worker(kafka, topics, app_id, tmp_path)
    workers.append(second)
    second.start()
    reached = wait_until(applied(len(items) + 4 * len(states)), timeout_s=90, every_s=1.0)
    got, monotonic = _latest_states(kafka, changelog)
    expected = _expected_counts(items + more)
    for user in states:
        expected[user]["search"] += 3
    short = [user for user, s in got.items() if Counter(s.counts) != expected[user]]
    assert reached and not short, (
        f"{len(short)} of {len(got)} users recovered short of the unsealed batch; "
        f"{second.log.read_text()[-2000:]}"
    )
    assert monotonic
    assert second.stop() == 0


def test_workers_joining_and_leaving_mid_stream_keep_every_count_exact(
    kafka: KafkaSettings, topics: TopicSettings, workers: list[Worker], tmp_path: Path
) -> None:
    """Issue 17, item 5: two session workers share the topics, a third joins and one of the
    first two leaves (SIGTERM) while events still come: each rebalance hands partitions over
    (flush at the revoke, recovery and the changelog tails at the assignment), and every
    user's counts end exact, with versions that only ever grew."""
    items = [i for i in generate(WORLD) if not isinstance(i, Malformed)]
    app_id = f"group-{uuid.uuid4().hex[:6]}"
    changelog = f"{app_id}-sessions-changelog"
    chunks = [items[i::4] for i in range(4)]  # each user's events in order within a chunk

    def start(name: str) -> Worker:
        folder = tmp_path / name
        folder.mkdir()
        worker = Worker(kafka, topics, app_id, folder)
        workers.append(worker)
        worker.start()
        return worker

    def applied() -> int:
        return sum(s.version for s in _latest_states(kafka, changelog)[0].values())

    first, second = start("first"), start("second")
    _produce(kafka, topics, chunks[0])
    assert wait_until(lambda: applied() >= len(chunks[0]), timeout_s=90, every_s=1.0)
    third = start("third")
    # Ready: it has joined, been given partitions and recovered them (the others rebalanced).
    assert wait_until(lambda: third.get("/ready")[0] == 200, timeout_s=60, every_s=0.5), (
        third.log.read_text()[-2000:]
    )
    _produce(kafka, topics, chunks[1])
    assert wait_until(lambda: third.processed() > 0, timeout_s=60, every_s=0.5), (
        third.log.read_text()[-2000:]
    )
    _produce(kafka, topics, chunks[2])
    assert first.stop() == 0  # leaves mid-stream: its partitions go to the other two
    _produce(kafka, topics, chunks[3])
    reached = wait_until(lambda: applied() >= len(items), timeout_s=120, every_s=1.0)
    states, monotonic = _latest_states(kafka, changelog)
    expected = _expected_counts([i for chunk in chunks for i in chunk])
    wrong = [u for u, s in states.items() if Counter(s.counts) != expected[u]]
    assert reached and not wrong, (
        f"{len(wrong)} of {len(states)} users wrong; {second.log.read_text()[-1500:]}"
    )
    assert monotonic
    assert second.stop() == 0 and third.stop() == 0
