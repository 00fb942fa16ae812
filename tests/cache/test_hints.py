"""The read path (HintClient) against the real Redis: one script, every source, bad data."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio
from redis.asyncio import Redis

from aigq.dev.probe import free_port
from aigq.settings import RedisSettings
from cache.compose import Hint
from cache.errors import CacheError, CacheTimeoutError, InvalidRequestError
from cache.hints import HintClient, check_user_id
from cache.history_store import HistoryStore
from cache.popular import PopularQueries
from cache.recent import RecentTriggers, Trigger
from cache.settings import HintSettings
from cache.u2q import U2QRun, U2QStore
from cache.x2q import X2QStore

NOW = int(time.time() * 1000)


MakeClient = Callable[..., HintClient]


@pytest_asyncio.fixture
async def make(redis_settings: RedisSettings) -> AsyncIterator[MakeClient]:
    """``make(prefix, **settings)``: a HintClient on the test database, closed after the test."""
    made: list[HintClient] = []

    def make(prefix: str, **overrides: object) -> HintClient:
        settings = HintSettings(**overrides)  # type: ignore[arg-type]
        made.append(HintClient(redis_settings.model_copy(update={"key_prefix": prefix}), settings))
        return made[-1]

    yield make
    for client in made:
        await client.aclose()


async def seed(client: Redis, prefix: str) -> U2QRun:
    """u1: a run, two triggers (one newer than the run, indexed; one older, indexed)."""
    run = U2QRun(("u2q one", "u2q two", "Shared Query"), "direct-3", 12, NOW - 60_000, NOW - 59_000)
    await U2QStore(client, prefix=prefix).write("u1", run)
    await RecentTriggers(client, prefix=prefix).record_many(
        [
            ("u1", "item", "SKU-7", NOW - 1_000),  # after the run's event
            ("u1", "query", "old query", NOW - 120_000),  # before it
            ("u1", "category", "not indexed", NOW - 2_000),
        ]
    )
    await X2QStore(client, prefix=prefix).publish(
        [
            ("item", "sku-7", ["fresh x2q", "shared query"]),
            ("query", "old query", ["seen x2q"]),
        ]
    )
    await PopularQueries(client, prefix=prefix).write([("popular one", 5), ("popular two", 3)])
    return run


async def x2q_key(client: Redis, prefix: str, kind: str, text: str) -> str:
    """The key of a trigger's entry in the current x2q version (an empty one made if none)."""
    store = X2QStore(client, prefix=prefix)
    version = await store.current() or await store.publish([])
    return store.key(kind, text, version)


@pytest.mark.integration
@pytest.mark.asyncio
async def test_every_source_in_one_composed_list(
    redis: tuple[Redis, str], make: MakeClient
) -> None:
    client, prefix = redis
    run = await seed(client, prefix)
    hints = make(prefix)
    result = await hints.hints("u1")
    assert result.hints == [
        Hint("fresh x2q", "x2q", "item:sku-7"),
        Hint("u2q one", "u2q"),
        Hint("shared query", "x2q", "item:sku-7"),  # the x2q spelling came first
        Hint("u2q two", "u2q"),
        Hint("seen x2q", "x2q", "query:old query"),
    ]
    assert result.u2q == run
    assert result.triggers == (
        Trigger("item", "sku-7", NOW - 1_000),
        Trigger("category", "not indexed", NOW - 2_000),
        Trigger("query", "old query", NOW - 120_000),
    )
    assert result.fallback is None
    assert not result.corrupt
    assert result.k == 10
    assert result.u2q_age_ms is not None
    # NOW is taken at import: the age has grown by however long the run took to get here.
    assert 59_000 <= result.u2q_age_ms <= 59_000 + int(time.time() * 1000) - NOW


@pytest.mark.integration
@pytest.mark.asyncio
async def test_k_is_capped_and_validated(redis: tuple[Redis, str], make: MakeClient) -> None:
    client, prefix = redis
    await seed(client, prefix)
    hints = make(prefix, default_k=2, max_k=3)
    assert [h.query for h in (await hints.hints("u1")).hints] == ["fresh x2q", "u2q one"]
    capped = await hints.hints("u1", 10**9)
    assert capped.k == 3
    assert len(capped.hints) == 3
    for bad in (0, -1, True, 2.5):
        with pytest.raises(InvalidRequestError, match="k must be"):
            await hints.hints("u1", bad)  # type: ignore[arg-type]


@pytest.mark.integration
@pytest.mark.asyncio
async def test_unknown_user_gets_popular_then_static_fallback(
    redis: tuple[Redis, str], make: MakeClient
) -> None:
    client, prefix = redis
    hints = make(prefix, popular_fallback="static a, static b")
    static = await hints.hints("nobody")
    assert static.hints == [Hint("static a", "popular"), Hint("static b", "popular")]
    assert static.fallback == "static"
    assert static.u2q is None
    assert static.u2q_age_ms is None
    await PopularQueries(client, prefix=prefix).write([("popular one", 5)])
    popular = await hints.hints("nobody")
    assert popular.hints == [Hint("popular one", "popular")]
    assert popular.fallback == "popular"
    assert (await make(f"{prefix}empty:").hints("nobody")).hints == []


@pytest.mark.integration
@pytest.mark.asyncio
async def test_triggers_without_an_index_are_not_an_error(
    redis: tuple[Redis, str], make: MakeClient
) -> None:
    client, prefix = redis
    await RecentTriggers(client, prefix=prefix).record_many([("u1", "item", "a", NOW)])
    await PopularQueries(client, prefix=prefix).write([("popular one", 5)])
    result = await make(prefix).hints("u1")
    assert result.hints == [Hint("popular one", "popular")]
    assert result.triggers == (Trigger("item", "a", NOW),)
    assert not result.corrupt


@pytest.mark.integration
@pytest.mark.asyncio
async def test_only_the_configured_number_of_triggers_is_looked_up(
    redis: tuple[Redis, str], make: MakeClient
) -> None:
    client, prefix = redis
    await RecentTriggers(client, prefix=prefix).record_many(
        [("u1", "item", f"i{n}", NOW + n) for n in range(4)]
    )
    await X2QStore(client, prefix=prefix).publish(
        [("item", f"i{n}", [f"q{n}a", f"q{n}b"]) for n in range(4)]
    )
    hints = make(prefix, triggers=2, per_trigger=1)
    result = await hints.hints("u1")
    assert [h.query for h in result.hints] == ["q3a", "q2a"]
    none = await make(prefix, triggers=0).hints("u1")
    assert none.hints == [] and none.triggers == ()


@pytest.mark.integration
@pytest.mark.asyncio
async def test_wrong_types_and_garbage_are_skipped_not_fatal(
    redis: tuple[Redis, str], make: MakeClient
) -> None:
    client, prefix = redis
    await seed(client, prefix)
    hints = make(prefix, popular_fallback="static")
    await client.delete(f"{prefix}u2q:u1")
    await client.lpush(f"{prefix}u2q:u1", b"{not json")
    garbage = await hints.hints("u1")
    assert garbage.corrupt and garbage.u2q is None
    assert [h.source for h in garbage.hints] == ["x2q", "x2q", "x2q"]

    await client.set(f"{prefix}u2q:u2", "a string, not a list")
    await client.set(f"{prefix}recent:u2", "not a zset")
    await client.set(f"{prefix}popular", "not a zset")
    wrong = await hints.hints("u2")
    assert wrong.corrupt
    assert wrong.hints == [Hint("static", "popular")]
    assert wrong.fallback == "static"

    await client.zadd(f"{prefix}recent:u3", {"bogus member": NOW, "item:sku-7": NOW - 1})
    await client.set(await x2q_key(client, prefix, "item", "sku-7"), "not json")
    odd = await hints.hints("u3")
    assert odd.corrupt
    assert odd.triggers == (Trigger("item", "sku-7", NOW - 1),)
    assert odd.hints == [Hint("static", "popular")]

    await client.zadd(f"{prefix}recent:u4", {"item:listed": NOW})
    await client.rpush(await x2q_key(client, prefix, "item", "listed"), "a list, not a string")
    listed = await hints.hints("u4")
    assert listed.corrupt
    assert listed.hints == [Hint("static", "popular")]


@pytest.mark.integration
@pytest.mark.asyncio
@pytest.mark.parametrize(
    "head",
    [
        b"{not json",
        b'{"v":12,"w":1700000000000,"q":["cut off',  # the expected start, then truncated
        b'{"w":1700000000000,"v":12,"q":["a"]}',  # no model, event or generation time
        b'{"v":12,"q":"not a list"}',
        b"[1, 2]",
    ],
)
async def test_an_undecodable_u2q_head_gets_the_popular_fallback(
    redis: tuple[Redis, str], make: MakeClient, head: bytes
) -> None:
    """Issue 15: an undecodable head used to give an empty list, popular unread."""
    client, prefix = redis
    await client.lpush(f"{prefix}u2q:u1", head)
    await PopularQueries(client, prefix=prefix).write([("popular one", 5), ("popular two", 3)])
    result = await make(prefix).hints("u1", k=1)
    assert result.hints == [Hint("popular one", "popular")]  # k is kept on the second read
    assert result.fallback == "popular"
    assert result.corrupt and result.u2q is None


@pytest.mark.integration
@pytest.mark.asyncio
async def test_history_leads_the_list_in_the_same_read(
    redis: tuple[Redis, str], make: MakeClient
) -> None:
    """Issue 16: the user's own past queries, from the one script call, before u2q and x2q."""
    client, prefix = redis
    await seed(client, prefix)
    await HistoryStore(client, prefix=prefix).write_many(
        [("u1", ["hist one", "u2q two", "hist three"]), ("u2", ["only history"])]
    )
    result = await make(prefix, history=2).hints("u1")
    assert result.history == ("hist one", "u2q two")  # AIGQ_HINTS_HISTORY: 2 of them
    assert [(h.query, h.source) for h in result.hints] == [
        ("hist one", "history"),
        ("u2q two", "history"),
        ("fresh x2q", "x2q"),
        ("u2q one", "u2q"),
        ("shared query", "x2q"),
        ("seen x2q", "x2q"),
    ]
    assert not result.corrupt
    only = await make(prefix).hints("u2")  # history alone: no popular fallback
    assert only.hints == [Hint("only history", "history")] and only.fallback is None
    off = await make(prefix, history=0).hints("u1")  # not read at all
    assert off.history == () and all(h.source != "history" for h in off.hints)


@pytest.mark.integration
@pytest.mark.asyncio
async def test_an_unreadable_history_is_skipped_as_corrupt(
    redis: tuple[Redis, str], make: MakeClient
) -> None:
    client, prefix = redis
    await PopularQueries(client, prefix=prefix).write([("popular one", 5)])
    await client.set(f"{prefix}history:u1", "not json")  # the script counts it as found
    garbage = await make(prefix).hints("u1")
    assert garbage.hints == [Hint("popular one", "popular")]  # from the second read
    assert garbage.corrupt and garbage.fallback == "popular"
    await client.rpush(f"{prefix}history:u2", "a list")  # the wrong type
    wrong = await make(prefix).hints("u2")
    assert wrong.hints == [Hint("popular one", "popular")] and wrong.corrupt


@pytest.mark.integration
@pytest.mark.asyncio
async def test_undecodable_entries_fall_back_to_static_when_popular_is_empty_or_wrong(
    redis: tuple[Redis, str], make: MakeClient
) -> None:
    client, prefix = redis
    hints = make(prefix, popular_fallback="static a, static b")
    await client.lpush(f"{prefix}u2q:u1", b"{not json")
    static = await hints.hints("u1")  # no popular set at all
    assert static.hints == [Hint("static a", "popular"), Hint("static b", "popular")]
    assert static.fallback == "static" and static.corrupt

    # x2q entries that exist but do not decode (the script counts them as found): popular
    await RecentTriggers(client, prefix=prefix).record_many([("u2", "item", "bad", NOW)])
    await client.set(await x2q_key(client, prefix, "item", "bad"), "not json")
    await PopularQueries(client, prefix=prefix).write([("popular one", 5)])
    x2q = await hints.hints("u2")
    assert x2q.hints == [Hint("popular one", "popular")]
    assert x2q.fallback == "popular" and x2q.corrupt
    assert x2q.triggers == (Trigger("item", "bad", NOW),)

    await client.delete(f"{prefix}popular")
    await client.set(f"{prefix}popular", "not a zset")  # the second read meets a wrong type
    wrong = await hints.hints("u1")
    assert wrong.fallback == "static" and wrong.corrupt


@pytest.mark.integration
@pytest.mark.asyncio
async def test_the_second_read_keeps_the_deadline(hung_port: int) -> None:
    """A request whose first read used up the deadline fails at it, not a deadline later."""
    # Redis answers the first command at once; the second read goes to a Redis that hangs.
    redis = RedisSettings(url=f"redis://127.0.0.1:{hung_port}/0")
    async with HintClient(redis, HintSettings(timeout_ms=150)) as hints:
        started = time.monotonic()
        with pytest.raises(CacheTimeoutError):
            await hints._popular("u1", 3, started - 0.2)  # the deadline is already past
        assert time.monotonic() - started < 0.05
        with pytest.raises(CacheTimeoutError, match=r"took over 0\.15s"):
            await hints._popular("u1", 3, started)
        assert 0.1 < time.monotonic() - started < 0.5


@pytest.mark.integration
@pytest.mark.asyncio
async def test_a_flushed_script_cache_is_reloaded(
    redis: tuple[Redis, str], make: MakeClient
) -> None:
    client, prefix = redis
    await seed(client, prefix)
    hints = make(prefix)
    await client.script_flush()
    assert len((await hints.hints("u1")).hints) == 5


@pytest.mark.parametrize(
    "user_id", ["", "a b", "a/b", "ü", "x" * 257, "nul\x00", "new\nline", "semi;colon"]
)
def test_bad_user_ids_are_refused(user_id: str) -> None:
    with pytest.raises(InvalidRequestError, match="user_id must be 1 to 256 characters"):
        check_user_id(user_id)


@pytest.mark.parametrize("user_id", ["u1", "x" * 256, "Ab.9_:@+=-", "4711", "user@example.com"])
def test_good_user_ids(user_id: str) -> None:
    assert check_user_id(user_id) == user_id


@pytest.mark.integration
@pytest.mark.asyncio
async def test_redis_down_is_a_cache_error_quickly() -> None:
    redis = RedisSettings(url=f"redis://127.0.0.1:{free_port()}/0")
    async with HintClient(redis, HintSettings(timeout_ms=200)) as hints:
        started = time.monotonic()
        with pytest.raises(CacheError, match="hint read of 'u1'"):
            await hints.hints("u1")
        with pytest.raises(CacheError):
            await hints.ping()
        assert time.monotonic() - started < 1.0


@pytest.mark.integration
@pytest.mark.asyncio
async def test_a_hung_redis_times_out_at_the_deadline(hung_port: int) -> None:
    redis = RedisSettings(url=f"redis://127.0.0.1:{hung_port}/0")
    async with HintClient(redis, HintSettings(timeout_ms=150)) as hints:
        started = time.monotonic()
        with pytest.raises(CacheTimeoutError, match=r"took over 0\.15s"):
            await hints.hints("u1")
        with pytest.raises(CacheTimeoutError):
            await hints.ping()
        assert time.monotonic() - started < 1.0
