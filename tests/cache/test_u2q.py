"""The per-user u2q store against the real Redis: compare-and-set, trimming, TTL, batches."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable
from urllib.parse import urlsplit

import pytest
import pytest_asyncio
from redis._parsers.base import BaseParser
from redis.asyncio import Redis
from redis.exceptions import NoPermissionError, ResponseError

from aigq.dev.probe import free_port
from aigq.errors import ServiceError
from aigq.redis_clients import open_redis
from aigq.settings import RedisSettings
from cache.errors import CorruptEntryError
from cache.u2q import (
    U2QRun,
    U2QStore,
    WriteRefused,
    WriteResult,
    decode_run,
    encode_run,
    is_outage,
)

# The pure encoding and validation tests below need no Redis; they stay here beside the rest.
pytestmark = pytest.mark.integration

TS = 1_700_000_000_000


def run(version: int, *queries: str, reason: str = "drift", watermark: int | None = None) -> U2QRun:
    return U2QRun(
        queries=queries or (f"query for v{version}", "second"),
        model_version="model-7",
        session_version=version,
        event_ts=TS + version,
        generated_ts=TS + version + 250,
        reason=reason,
        watermark_ts=watermark,
    )


@pytest.fixture
def store(redis: tuple[Redis, str]) -> U2QStore:
    client, prefix = redis
    return U2QStore(client, prefix=prefix, keep_runs=3, ttl_s=600)


@pytest.mark.asyncio
async def test_write_then_read_back(store: U2QStore) -> None:
    assert await store.runs("u1") == []
    assert await store.latest("u1") is None
    first = run(5, reason="cold_start")
    assert await store.write("u1", first) is WriteResult.WRITTEN
    assert await store.runs("u1") == [first]
    assert await store.latest("u1") == first
    assert await store.runs("u2") == []


@pytest.mark.asyncio
async def test_key_layout(redis: tuple[Redis, str], store: U2QStore) -> None:
    client, prefix = redis
    assert store.key("u1") == f"{prefix}u2q:u1"
    assert U2QStore(client).key("u1") == "aigq:u2q:u1"
    await store.write("u1", run(1))
    assert await client.type(store.key("u1")) == b"list"


@pytest.mark.asyncio
async def test_older_version_never_overwrites(store: U2QStore) -> None:
    newer = run(10)
    await store.write("u1", newer)
    assert await store.write("u1", run(9)) is WriteResult.STALE
    assert await store.write("u1", run(0)) is WriteResult.STALE
    assert await store.runs("u1") == [newer]


@pytest.mark.asyncio
async def test_replayed_write_is_a_no_op(redis: tuple[Redis, str], store: U2QStore) -> None:
    client, _ = redis
    original = run(7)
    await store.write("u1", original)
    await client.expire(store.key("u1"), 100)
    replay = U2QRun(("different",), "model-8", 7, TS, TS + 1)
    assert await store.write("u1", replay) is WriteResult.STALE
    assert await store.runs("u1") == [original]
    assert await client.ttl(store.key("u1")) <= 100  # a stale write leaves the TTL alone


@pytest.mark.asyncio
async def test_keeps_only_the_newest_runs_newest_first(store: U2QStore) -> None:
    for version in range(1, 7):
        assert await store.write("u1", run(version)) is WriteResult.WRITTEN
    assert [r.session_version for r in await store.runs("u1")] == [6, 5, 4]
    assert (await store.latest("u1")) == run(6)


@pytest.mark.asyncio
async def test_keep_one(redis: tuple[Redis, str]) -> None:
    client, prefix = redis
    store = U2QStore(client, prefix=prefix, keep_runs=1)
    await store.write("u1", run(1))
    await store.write("u1", run(2))
    assert await store.runs("u1") == [run(2)]
    assert await client.llen(store.key("u1")) == 1


@pytest.mark.asyncio
async def test_ttl_is_set_and_refreshed(redis: tuple[Redis, str], store: U2QStore) -> None:
    client, _ = redis
    await store.write("u1", run(1))
    assert 0 < await client.ttl(store.key("u1")) <= 600
    await client.expire(store.key("u1"), 5)
    await store.write("u1", run(2))
    assert 5 < await client.ttl(store.key("u1")) <= 600


@pytest.mark.asyncio
async def test_write_many_mixes_written_and_stale(store: U2QStore) -> None:
    await store.write("a", run(10))
    await store.write("b", run(1))
    results = await store.write_many(
        [
            ("a", run(3)),  # older than stored
            ("b", run(2)),  # newer
            ("c", run(4)),  # new user
            ("d", run(8)),  # same user twice, higher first: the lower one is stale
            ("d", run(6)),
            ("e", run(6)),  # same user twice, lower first: both land, higher newest
            ("e", run(8)),
            ("a", run(10)),  # replay
        ]
    )
    W, S = WriteResult.WRITTEN, WriteResult.STALE
    assert results == [S, W, W, W, S, W, W, S]
    assert results[0] == "stale"  # a StrEnum: compares with its plain value
    assert [r.session_version for r in await store.runs("a")] == [10]
    assert [r.session_version for r in await store.runs("b")] == [2, 1]
    assert [r.session_version for r in await store.runs("c")] == [4]
    assert [r.session_version for r in await store.runs("d")] == [8]
    assert [r.session_version for r in await store.runs("e")] == [8, 6]
    assert await store.write_many([]) == []


@pytest.mark.asyncio
async def test_write_many_loads_the_script_on_a_flushed_server(
    redis: tuple[Redis, str], store: U2QStore
) -> None:
    client, _ = redis
    await client.script_flush()
    results = await store.write_many([("u1", run(1)), ("u2", run(2)), ("u1", run(3))])
    assert results == [WriteResult.WRITTEN] * 3
    assert [r.session_version for r in await store.runs("u1")] == [3, 1]


@pytest.mark.parametrize(
    "queries",
    [("just one",), ("café", "東京", 'naïve "quoted" / slash', "emoji 🙂"), ()],
    ids=["single", "unicode", "empty"],
)
@pytest.mark.asyncio
async def test_queries_round_trip_exactly(store: U2QStore, queries: tuple[str, ...]) -> None:
    stored = U2QRun(queries, "m-ü", 3, TS, TS + 1, reason="")
    await store.write("user/with:odd chars ü", stored)
    [back] = await store.runs("user/with:odd chars ü")
    assert back == stored
    assert type(back.queries) is tuple
    assert type(back.session_version) is int


@pytest.mark.asyncio
async def test_large_versions_compare_exactly(store: U2QStore) -> None:
    big = 2**62  # well past 2**53, where a float would no longer tell these apart
    await store.write("u1", run(big + 1))
    assert await store.write("u1", run(big)) is WriteResult.STALE
    assert await store.write("u1", run(big + 2)) is WriteResult.WRITTEN
    assert await store.write("u1", run(99)) is WriteResult.STALE  # fewer digits
    assert [r.session_version for r in await store.runs("u1")] == [big + 2, big + 1]


@pytest.mark.asyncio
async def test_concurrent_writers_keep_the_max_newest(store: U2QStore) -> None:
    versions = list(range(1, 21))
    random.Random(7).shuffle(versions)
    results = await asyncio.gather(*(store.write("u1", run(v)) for v in versions))
    assert WriteResult.WRITTEN in results
    stored = [r.session_version for r in await store.runs("u1")]
    assert stored[0] == 20
    assert stored == sorted(stored, reverse=True)
    assert len(set(stored)) == len(stored) <= 3


@pytest.mark.asyncio
async def test_unreadable_head_is_replaced(redis: tuple[Redis, str], store: U2QStore) -> None:
    client, _ = redis
    await client.set(store.key("u1"), "not a list")
    assert await store.write("u1", run(1)) is WriteResult.WRITTEN
    assert await store.runs("u1") == [run(1)]
    await client.lpush(store.key("u2"), b"garbage")
    assert await store.write_many([("u2", run(2))]) == [WriteResult.WRITTEN]
    assert await store.runs("u2") == [run(2)]


@pytest.mark.asyncio
async def test_corrupt_element_is_a_corrupt_entry_error(
    redis: tuple[Redis, str], store: U2QStore
) -> None:
    client, _ = redis
    await client.rpush(store.key("u1"), encode_run(run(2)), b'{"v":1,"q":"not a list"}')
    assert await store.latest("u1") == run(2)
    with pytest.raises(CorruptEntryError, match="undecodable u2q run"):
        await store.runs("u1")


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"[]",
        b'{"v":1}',
        b'{"v":1.5,"q":[],"m":"m","e":1,"g":1}',
        b'{"v":1,"q":[3],"m":"m","e":1,"g":1}',
        b'{"v":1,"q":[],"m":"m","e":1,"g":1,"r":null}',
    ],
)
def test_decode_rejects_malformed(raw: bytes) -> None:
    with pytest.raises(CorruptEntryError):
        decode_run(raw)


def test_encoding_puts_the_version_then_the_watermark_first() -> None:
    assert encode_run(run(42)).startswith(b'{"v":42,"q":')
    assert decode_run(encode_run(run(42)).decode()) == run(42)
    assert encode_run(run(42, watermark=TS)).startswith(b'{"v":42,"w":%d,"q":' % TS)
    assert decode_run(encode_run(run(42, watermark=TS))) == run(42, watermark=TS)


def test_an_element_written_before_watermarks_still_decodes() -> None:
    old = b'{"v":7,"q":["a"],"m":"m-1","e":%d,"g":%d,"r":"drift"}' % (TS, TS + 1)
    assert decode_run(old) == U2QRun(("a",), "m-1", 7, TS, TS + 1, "drift", watermark_ts=None)


def test_run_validation() -> None:
    assert U2QRun(["a", "b"], "m", 1, TS, TS).queries == ("a", "b")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="session_version"):
        U2QRun(("a",), "m", -1, TS, TS)
    with pytest.raises(ValueError, match="event_ts"):
        U2QRun(("a",), "m", 1, True, TS)
    with pytest.raises(ValueError, match="queries"):
        U2QRun("abc", "m", 1, TS, TS)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="watermark_ts"):
        U2QRun(("a",), "m", 1, TS, TS, watermark_ts=2**63)


def test_store_validation() -> None:
    client = open_redis(RedisSettings())  # never connects: nothing to close
    with pytest.raises(ValueError, match="keep_runs"):
        U2QStore(client, keep_runs=0)
    with pytest.raises(ValueError, match="ttl_s"):
        U2QStore(client, ttl_s=0)
    with pytest.raises(ValueError, match="user_id"):
        U2QStore(client).key("")


@pytest.mark.asyncio
async def test_unreachable_redis_is_a_service_error() -> None:
    settings = RedisSettings(url=f"redis://127.0.0.1:{free_port()}/0", socket_timeout_s=0.5)
    async with open_redis(settings) as client:
        store = U2QStore(client)
        started = time.monotonic()
        with pytest.raises(ServiceError, match="u2q write"):
            await store.write("u1", run(1))
        with pytest.raises(ServiceError, match="u2q write of 1 runs"):
            await store.write_many([("u1", run(1))])
        with pytest.raises(ServiceError, match="u2q read"):
            await store.runs("u1")
        with pytest.raises(ServiceError, match="u2q read"):
            await store.latest("u1")
        assert time.monotonic() - started < 5


# --- the (watermark, version) order ------------------------------------------------------


@pytest.mark.asyncio
async def test_a_rebuilt_state_with_a_lower_version_and_a_newer_watermark_is_written(
    store: U2QStore,
) -> None:
    before = run(500, watermark=TS)
    await store.write("u1", before)
    rebuilt = run(3, watermark=TS + 1)  # rebuilt from the log: counts from 1 again
    assert await store.write("u1", rebuilt) is WriteResult.WRITTEN
    assert await store.write("u1", run(4, watermark=TS + 60_000)) is WriteResult.WRITTEN
    assert [r.session_version for r in await store.runs("u1")] == [4, 3, 500]


@pytest.mark.asyncio
async def test_an_older_watermark_is_refused_whatever_its_version(store: U2QStore) -> None:
    newest = run(3, watermark=TS + 1_000)
    await store.write("u1", newest)
    assert await store.write("u1", run(10**15, watermark=TS + 999)) is WriteResult.STALE
    assert await store.write("u1", run(4)) is WriteResult.STALE  # no watermark: counts as 0
    assert await store.runs("u1") == [newest]


@pytest.mark.asyncio
async def test_an_equal_watermark_falls_back_to_the_version(store: U2QStore) -> None:
    await store.write("u1", run(5, watermark=TS))
    assert await store.write("u1", run(4, watermark=TS)) is WriteResult.STALE
    assert await store.write("u1", run(5, watermark=TS)) is WriteResult.STALE  # a replay
    assert await store.write("u1", run(6, watermark=TS)) is WriteResult.WRITTEN
    assert [r.session_version for r in await store.runs("u1")] == [6, 5]


@pytest.mark.asyncio
async def test_watermarks_of_different_lengths_compare_as_numbers(store: U2QStore) -> None:
    await store.write("u1", run(1, watermark=99))
    assert await store.write("u1", run(1, watermark=100)) is WriteResult.WRITTEN
    assert await store.write("u1", run(9, watermark=99)) is WriteResult.STALE


@pytest.mark.asyncio
async def test_an_old_format_head_counts_as_watermark_zero(
    redis: tuple[Redis, str], store: U2QStore
) -> None:
    client, _ = redis
    old = b'{"v":900,"q":["old"],"m":"m-1","e":%d,"g":%d,"r":"drift"}' % (TS, TS + 1)
    await client.lpush(store.key("u1"), old)
    await client.lpush(store.key("u2"), old)
    # Without a watermark, the version decides as before: lower is stale, higher lands.
    assert await store.write("u1", run(899)) is WriteResult.STALE
    assert await store.write("u1", run(901)) is WriteResult.WRITTEN
    # Any watermark beats the old head, whatever the version; the old head stays as history.
    assert await store.write("u2", run(1, watermark=TS)) is WriteResult.WRITTEN
    assert await store.runs("u2") == [run(1, watermark=TS), decode_run(old)]
    assert (await store.runs("u2"))[1].watermark_ts is None


# --- refusals and outages ------------------------------------------------------------------


@pytest_asyncio.fixture
async def limited(
    redis: tuple[Redis, str], redis_settings: RedisSettings
) -> AsyncIterator[tuple[Redis, str]]:
    """A client whose Redis user may touch only keys under ``<prefix>u2q:ok-`` (an ACL user
    made for the test and deleted after it): Redis refuses its writes of any other key."""
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
    limited = open_redis(RedisSettings(url=url.geturl()))
    try:
        yield limited, prefix
    finally:
        await limited.aclose()
        await client.acl_deluser(user)


@pytest.mark.asyncio
async def test_a_write_redis_refuses_comes_back_in_its_place(
    limited: tuple[Redis, str],
) -> None:
    client, prefix = limited
    store = U2QStore(client, prefix=prefix)
    results = await store.write_many(
        [("ok-1", run(1)), ("other", run(1)), ("ok-2", run(2)), ("ok-1", run(0))]
    )
    assert results[0] is WriteResult.WRITTEN and results[2] is WriteResult.WRITTEN
    assert results[3] is WriteResult.STALE
    refused = results[1]
    assert isinstance(refused, WriteRefused) and not isinstance(refused, ServiceError)
    assert isinstance(refused.__cause__, NoPermissionError)
    assert f"{prefix}u2q:other" in str(refused) and "NOPERM this user" in str(refused)
    assert await store.runs("ok-1") == [run(1)] and await store.runs("ok-2") == [run(2)]
    with pytest.raises(WriteRefused, match="refused the u2q write"):
        await store.write("other", run(3))
    assert await store.write("ok-1", run(3)) is WriteResult.WRITTEN


# How redis-py turns an error reply into an exception (the parser is untyped).
_parse_error: Callable[[str], BaseException] = BaseParser.parse_error


def _reply(line: str) -> ResponseError:
    error = _parse_error(line)
    assert isinstance(error, ResponseError)
    return error


@pytest.mark.parametrize(
    ("line", "outage"),
    [
        ("NOPERM this user has no permissions to access one of the keys used as arguments", False),
        ("NOPERM No permissions to access a key", False),
        ("ERR user_script:12: Script attempted to access nonexistent global variable", False),
        ("ERR Error running script (call to f_0123): @user_script:5: bad argument", False),
        ("WRONGTYPE Operation against a key holding the wrong kind of value", False),
        ("NOPERM this user has no permissions to run the 'evalsha' command", True),
        ("OOM command not allowed when used memory > 'maxmemory'.", True),
        ("READONLY You can't write against a read only replica.", True),
        ("BUSY Redis is busy running a script.", True),
        ("MISCONF Redis is configured to save RDB snapshots, but it's unable to persist", True),
        ("NOSCRIPT No matching script. Please use EVAL.", True),
        ("MASTERDOWN Link with MASTER is down", True),
    ],
)
def test_outages_are_told_from_refusals_of_one_write(line: str, outage: bool) -> None:
    assert is_outage(_reply(line)) is outage
