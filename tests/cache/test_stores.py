"""Recent triggers, the x2q index and popular queries against the real Redis."""

from __future__ import annotations

import time

import pytest
from redis.asyncio import Redis

from aigq.dev.probe import free_port
from aigq.errors import ServiceError
from aigq.redis_clients import open_redis
from aigq.settings import RedisSettings
from cache.errors import CorruptEntryError
from cache.popular import PopularQueries
from cache.recent import RecentTriggers, Trigger, parse_member, trigger_member
from cache.x2q import X2QStore, decode_queries

# The pure encoding and validation tests below need no Redis; they stay beside the rest.
pytestmark = pytest.mark.integration

TS = 1_700_000_000_000


@pytest.fixture
def recent(redis: tuple[Redis, str]) -> RecentTriggers:
    client, prefix = redis
    return RecentTriggers(client, prefix=prefix, keep=3, ttl_s=600)


@pytest.mark.asyncio
async def test_record_many_keeps_the_newest_by_event_time(
    redis: tuple[Redis, str], recent: RecentTriggers
) -> None:
    client, prefix = redis
    sent = await recent.record_many(
        [
            ("u1", "query", "Running  Shoes", TS + 3),
            ("u1", "item", "SKU-1", TS + 1),  # arrives first, happened before the query
            ("u1", "category", "Trail Running", TS + 2),
            ("u2", "item", "SKU-9", TS),
        ]
    )
    assert sent == 4
    assert await recent.latest("u1") == [
        Trigger("query", "running shoes", TS + 3),
        Trigger("category", "trail running", TS + 2),
        Trigger("item", "sku-1", TS + 1),
    ]
    assert await recent.latest("u2") == [Trigger("item", "sku-9", TS)]
    assert recent.key("u1") == f"{prefix}recent:u1"
    assert await client.type(recent.key("u1")) == b"zset"


@pytest.mark.asyncio
async def test_a_repeated_trigger_is_one_entry_with_its_newest_time(
    recent: RecentTriggers,
) -> None:
    await recent.record_many([("u1", "item", "a", TS + 5), ("u1", "item", "b", TS + 6)])
    await recent.record_many([("u1", "item", "A", TS + 9), ("u1", "item", "a", TS + 1)])
    assert await recent.latest("u1") == [
        Trigger("item", "a", TS + 9),
        Trigger("item", "b", TS + 6),
    ]


@pytest.mark.asyncio
async def test_replaying_the_same_events_changes_nothing(recent: RecentTriggers) -> None:
    events = [("u1", "query", f"q{i}", TS + i) for i in range(5)]
    await recent.record_many(events)
    first = await recent.latest("u1")
    await recent.record_many(events)
    assert await recent.latest("u1") == first
    assert [t.text for t in first] == ["q4", "q3", "q2"]  # trimmed to keep=3


@pytest.mark.asyncio
async def test_old_events_arriving_late_do_not_push_out_newer_ones(
    recent: RecentTriggers,
) -> None:
    await recent.record_many([("u1", "query", f"new{i}", TS + 100 + i) for i in range(3)])
    await recent.record_many([("u1", "query", "late", TS)])
    assert [t.text for t in await recent.latest("u1")] == ["new2", "new1", "new0"]


@pytest.mark.asyncio
async def test_ttl_and_partial_reads(redis: tuple[Redis, str], recent: RecentTriggers) -> None:
    client, _ = redis
    await recent.record_many([("u1", "query", "a", TS), ("u1", "query", "b", TS + 1)])
    assert 0 < await client.ttl(recent.key("u1")) <= 600
    assert await recent.latest("u1", 1) == [Trigger("query", "b", TS + 1)]
    assert await recent.latest("u1", 0) == []
    assert await recent.latest("nobody") == []


@pytest.mark.asyncio
async def test_blank_text_is_skipped_and_bad_input_refused(recent: RecentTriggers) -> None:
    assert await recent.record_many([("u1", "query", "  \t ", TS)]) == 0
    assert await recent.record_many([]) == 0
    assert await recent.latest("u1") == []
    with pytest.raises(ValueError, match="trigger kind"):
        await recent.record_many([("u1", "search", "x", TS)])
    with pytest.raises(ValueError, match="ts_ms"):
        await recent.record_many([("u1", "query", "x", -1)])
    with pytest.raises(ValueError, match="ts_ms"):
        await recent.record_many([("u1", "query", "x", 1.5)])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="user_id"):
        await recent.record_many([("", "query", "x", TS)])
    assert await recent.latest("u1") == []  # validated before anything was sent


def test_member_encoding() -> None:
    assert trigger_member("item", " SKU  42 ") == "item:sku 42"
    assert trigger_member("query", "   ") == ""
    assert trigger_member("category", "x" * 500) == "category:" + "x" * 200
    assert parse_member(b"query:a:b", b"5") == Trigger("query", "a:b", 5)
    assert parse_member("item:x", 1.7e12) == Trigger("item", "x", 1_700_000_000_000)
    for bad in (b"nokind", b"other:x", b"query:"):
        assert parse_member(bad, 1) is None
    assert parse_member(b"query:x", b"not a number") is None


@pytest.mark.asyncio
async def test_x2q_round_trip_and_the_key_recent_triggers_use(
    redis: tuple[Redis, str],
) -> None:
    client, prefix = redis
    x2q = X2QStore(client, prefix=prefix, ttl_s=600, max_queries=3)
    v = await x2q.publish(
        [
            ("item", "SKU-1", ["q1", " q2 ", "", "q3", "q4"]),
            ("query", "Running Shoes", ["trail shoes"]),
        ]
    )
    assert x2q.key("item", "sku-1", v) == f"{prefix}x2q:{v}:item:sku-1"
    assert x2q.key("query", "running  shoes", v) == f"{prefix}x2q:{v}:" + trigger_member(
        "query", "Running Shoes"
    )
    assert await x2q.lookup([("item", "SKU-1"), ("query", "running shoes"), ("item", "?")]) == [
        ["q1", "q2", "q3"],
        ["trail shoes"],
        [],
    ]
    assert await x2q.lookup([("item", "sku-1")], per_trigger=1) == [["q1"]]
    assert 0 < await client.ttl(x2q.key("item", "sku-1", v)) <= 600
    assert await client.get(x2q.key("item", "sku-1", v)) == b'["q1","q2","q3"]'


def test_x2q_entries_that_are_not_lists_of_strings_are_corrupt() -> None:
    assert decode_queries(b'["a","b"]') == ["a", "b"]
    for bad in (b"", b"not json", b'{"a":1}', b'["a",2]', b'"a"'):
        with pytest.raises(CorruptEntryError):
            decode_queries(bad)


@pytest.mark.asyncio
async def test_x2q_rewrite_replaces_and_empty_deletes(redis: tuple[Redis, str]) -> None:
    client, prefix = redis
    x2q = X2QStore(client, prefix=prefix)
    v = await x2q.publish([("item", "a", ["old1", "old2"])])
    await x2q.write_many([("item", "a", ["new"])], v)  # in place, in the current version
    assert await x2q.lookup([("item", "a")]) == [["new"]]
    await x2q.write_many([("item", "a", [])], v)
    assert await client.exists(x2q.key("item", "a", v)) == 0
    with pytest.raises(ValueError, match="not a str"):
        await x2q.write_many([("item", "a", "abc")], v)
    with pytest.raises(ValueError, match="empty once normalised"):
        x2q.key("item", " ", v)


@pytest.mark.asyncio
async def test_an_index_that_does_not_exist_is_empty_not_an_error(
    redis: tuple[Redis, str],
) -> None:
    client, prefix = redis
    x2q = X2QStore(client, prefix=f"{prefix}never-built:")
    assert await x2q.lookup([("item", "a"), ("category", "b")]) == [[], []]
    assert await x2q.lookup([]) == []


@pytest.mark.asyncio
async def test_popular_replaced_whole_and_read_best_first(redis: tuple[Redis, str]) -> None:
    client, prefix = redis
    popular = PopularQueries(client, prefix=prefix)
    assert await popular.top(5) == []
    kept = await popular.write([("shoes", 10), ("hats", 30), (" ", 99), ("shoes", 50)])
    assert kept == 2
    assert await popular.top(5) == ["shoes", "hats"]
    assert await popular.top(1) == ["shoes"]
    assert await popular.top(0) == []
    await popular.write([("coats", 1)], ttl_s=100)
    assert await popular.top(5) == ["coats"]
    assert 0 < await client.ttl(popular.key) <= 100
    await popular.write([])
    assert await client.exists(popular.key) == 0
    with pytest.raises(ValueError, match="finite"):
        await popular.write([("x", float("nan"))])


@pytest.mark.asyncio
async def test_unreachable_redis_is_a_service_error_quickly() -> None:
    settings = RedisSettings(url=f"redis://127.0.0.1:{free_port()}/0")
    async with open_redis(settings, timeout_s=0.5, retries=0) as client:
        started = time.monotonic()
        with pytest.raises(ServiceError, match="recent-trigger write"):
            await RecentTriggers(client).record_many([("u", "query", "x", TS)])
        with pytest.raises(ServiceError, match="recent-trigger read"):
            await RecentTriggers(client).latest("u")
        with pytest.raises(ServiceError, match="x2q write"):
            await X2QStore(client).write_many([("item", "a", ["q"])], "v000001")
        with pytest.raises(ServiceError, match="x2q lookup"):
            await X2QStore(client).lookup([("item", "a")])
        with pytest.raises(ServiceError, match="popular-query write"):
            await PopularQueries(client).write([("q", 1)])
        with pytest.raises(ServiceError, match="popular-query read"):
            await PopularQueries(client).top(3)
        assert time.monotonic() - started < 5


def test_store_validation() -> None:
    client = open_redis(RedisSettings())  # never connects
    with pytest.raises(ValueError, match="keep"):
        RecentTriggers(client, keep=0)
    with pytest.raises(ValueError, match="ttl_s"):
        RecentTriggers(client, ttl_s=0)
    with pytest.raises(ValueError, match="ttl_s, max_queries and grace_s"):
        X2QStore(client, max_queries=0)
    with pytest.raises(ValueError, match="grace_s"):
        X2QStore(client, grace_s=0)
