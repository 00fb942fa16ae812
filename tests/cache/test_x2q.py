"""The versioned x2q index against the real Redis: begin, write, switch, discard, and readers
that never see a mix of two versions while the builder switches."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Sequence

import pytest
from redis.asyncio import Redis

from aigq.dev.probe import free_port
from aigq.errors import ServiceError
from aigq.redis_clients import open_redis
from aigq.settings import RedisSettings
from cache.hints import HintClient
from cache.popular import PopularQueries
from cache.recent import RecentTriggers
from cache.settings import HintSettings
from cache.x2q import X2QStore

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

NOW = int(time.time() * 1000)
GRACE_S = 30
Entries = list[tuple[str, str, Sequence[str]]]


def index(tag: str, n: int) -> Entries:
    """``n`` item triggers, each mapped to two queries tagged with ``tag``."""
    return [("item", f"sku-{i}", [f"{tag}-{i}-0", f"{tag}-{i}-1"]) for i in range(n)]


def client_for(settings: RedisSettings, prefix: str, **overrides: object) -> HintClient:
    hint_settings = HintSettings(**overrides)  # type: ignore[arg-type]
    return HintClient(settings.model_copy(update={"key_prefix": prefix}), hint_settings)


async def test_a_version_is_invisible_until_switched_to_and_the_old_one_expires(
    redis: tuple[Redis, str],
) -> None:
    client, prefix = redis
    store = X2QStore(client, prefix=prefix, ttl_s=600, grace_s=GRACE_S)
    wanted = [("item", "sku-1"), ("item", "sku-2")]
    assert await store.current() is None
    assert await store.lookup(wanted) == [[], []]  # no index yet: empty, not an error

    first, second = await store.begin(), await store.begin()
    assert (first, second) == ("v000001", "v000002")  # INCR <prefix>x2q:next, 6 digits
    await store.write_many(index("a", 3), first)
    assert await store.lookup(wanted) == [[], []]  # written, not switched to
    assert await store.switch(first) is None
    assert await store.current() == first
    assert await client.get(store.pointer_key) == first.encode()
    assert await store.lookup(wanted) == [["a-1-0", "a-1-1"], ["a-2-0", "a-2-1"]]

    await store.write_many(index("b", 3), second)
    assert await store.lookup(wanted, per_trigger=1) == [["a-1-0"], ["a-2-0"]]
    assert await store.switch(second) == first
    assert await store.lookup(wanted, per_trigger=1) == [["b-1-0"], ["b-2-0"]]
    for i in range(3):  # the old version lingers for the grace period only
        assert 0 < await client.ttl(store.key("item", f"sku-{i}", first)) <= GRACE_S
        assert GRACE_S < await client.ttl(store.key("item", f"sku-{i}", second)) <= 600

    assert await store.switch(second) == second  # already current: nothing expires
    assert await client.ttl(store.key("item", "sku-1", second)) > GRACE_S
    with pytest.raises(ValueError, match="older than the current"):
        await store.switch(first)
    with pytest.raises(ValueError, match="never reserved"):
        await store.switch("v000099")
    assert await store.current() == second


async def test_versions_are_checked(redis: tuple[Redis, str]) -> None:
    client, prefix = redis
    store = X2QStore(client, prefix=prefix)
    for bad in ("v1", "000001", "v0000001", "v00001a", "current", "next", ""):
        with pytest.raises(ValueError, match="6 digits"):
            store.key("item", "a", bad)
        with pytest.raises(ValueError, match="6 digits"):
            await store.write_many([("item", "a", ["q"])], bad)
        with pytest.raises(ValueError, match="6 digits"):
            await store.switch(bad)
        with pytest.raises(ValueError, match="6 digits"):
            await store.discard(bad)
    await client.set(store.pointer_key, "garbage")
    with pytest.raises(ServiceError, match="pointer"):
        await store.current()
    version = await store.begin()
    assert await store.switch(version) is None  # a pointer no switch wrote is replaced
    assert await store.current() == version


async def test_discard_deletes_an_abandoned_build_never_the_current_one(
    redis: tuple[Redis, str],
) -> None:
    client, prefix = redis
    store = X2QStore(client, prefix=prefix)
    current = await store.publish(index("a", 2))
    abandoned = await store.begin()
    await store.write_many(index("b", 3), abandoned)
    assert await store.discard(abandoned) == 3
    assert await client.exists(*(store.key(k, t, abandoned) for k, t, _ in index("b", 3))) == 0
    assert await store.discard(abandoned) == 0
    with pytest.raises(ValueError, match="is current"):
        await store.discard(current)
    assert await store.lookup([("item", "sku-1")]) == [["a-1-0", "a-1-1"]]


async def test_a_switch_expires_every_old_key_and_only_those(redis: tuple[Redis, str]) -> None:
    """More keys than one SCAN batch, and a key prefix that is a glob pattern: the switch of
    ``<p>*:`` must not touch the index under ``<p>z:``."""
    client, prefix = redis
    starred = X2QStore(client, prefix=f"{prefix}*:", grace_s=GRACE_S)
    other = X2QStore(client, prefix=f"{prefix}z:", grace_s=GRACE_S)
    old = await starred.publish(index("a", 2_500))
    kept = await other.publish(index("a", 2))
    assert old == kept  # each prefix has its own counter
    assert await starred.publish(index("b", 1)) != old
    ttls = [await client.ttl(starred.key(k, t, old)) for k, t, _ in index("a", 2_500)]
    assert all(0 < ttl <= GRACE_S for ttl in ttls)
    untouched = [await client.ttl(other.key(k, t, kept)) for k, t, _ in index("a", 2)]
    assert all(ttl > GRACE_S for ttl in untouched)


async def test_the_hint_read_uses_the_current_version_only(
    redis: tuple[Redis, str], redis_settings: RedisSettings
) -> None:
    client, prefix = redis
    store = X2QStore(client, prefix=prefix)
    await RecentTriggers(client, prefix=prefix).record_many([("u1", "item", "sku-1", NOW)])
    async with client_for(redis_settings, prefix, per_trigger=1) as hints:
        version = await store.begin()
        await store.write_many(index("a", 2), version)
        before = await hints.hints("u1")
        assert [h for h in before.hints if h.source == "x2q"] == [] and len(before.triggers) == 1
        await store.switch(version)
        assert [h.query for h in (await hints.hints("u1")).hints] == ["a-1-0"]
        newer = await store.begin()
        await store.write_many(index("b", 2), newer)
        assert [h.query for h in (await hints.hints("u1")).hints] == ["a-1-0"]
        await store.switch(newer)
        after = await hints.hints("u1")
        assert [h.query for h in after.hints] == ["b-1-0"] and not after.corrupt

        await client.delete(store.pointer_key)
        await client.rpush(store.pointer_key, newer)  # a pointer of the wrong type
        wrong = await hints.hints("u1")
        assert wrong.corrupt and [h for h in wrong.hints if h.source == "x2q"] == []


async def test_an_x2q_only_list_is_topped_up_with_popular_queries(
    redis: tuple[Redis, str], redis_settings: RedisSettings
) -> None:
    """A user whose fresh trigger is indexed but who has no u2q run and no history gets the
    trigger's queries, then popular ones up to k, in the one read."""
    client, prefix = redis
    await X2QStore(client, prefix=prefix).publish(index("a", 2))
    await PopularQueries(client, prefix=prefix).write(
        [("pop one", 3), ("a-1-1", 2), ("pop two", 1)]
    )
    await RecentTriggers(client, prefix=prefix).record_many([("u1", "item", "sku-1", NOW)])
    async with client_for(redis_settings, prefix, history=0) as hints:
        got = await hints.hints("u1", k=4)
    assert [(h.query, h.source) for h in got.hints] == [
        ("a-1-0", "x2q"), ("a-1-1", "x2q"), ("pop one", "popular"), ("pop two", "popular"),
    ]  # fmt: skip
    assert got.fallback is None and not got.corrupt


async def test_readers_never_see_a_mix_of_two_versions(
    redis: tuple[Redis, str], redis_settings: RedisSettings
) -> None:
    """The builder switches A -> B -> A ... (each a fresh version, written whole first) while
    hint reads and lookups run in a loop: every read is all "a-" or all "b-", never mixed."""
    client, prefix = redis
    triggers, switches, per_trigger = 200, 50, 2
    store = X2QStore(client, prefix=prefix, grace_s=GRACE_S)
    chosen = [("item", f"sku-{i}") for i in range(0, triggers, triggers // 5)]
    await RecentTriggers(client, prefix=prefix).record_many(
        [("u1", kind, text, NOW + n) for n, (kind, text) in enumerate(chosen)]
    )
    await store.publish(index("a", triggers))
    reads: list[tuple[str, str]] = []  # (reader kind, tag), in the order they finished
    bad: list[tuple[str, list[str]]] = []  # mixed or incomplete reads
    stop, seen_new = asyncio.Event(), asyncio.Event()
    expected, kinds_seen = ["a"], set[str]()  # seen_new: both kinds read the expected tag

    def record(kind: str, queries: list[str]) -> None:
        tags = {q.split("-", 1)[0] for q in queries}
        if len(tags) != 1 or len(queries) != len(chosen) * per_trigger:
            bad.append((kind, queries))
            return
        tag = tags.pop()
        reads.append((kind, tag))
        if tag == expected[0]:
            kinds_seen.add(kind)
            if kinds_seen == {"hints", "lookup"}:
                seen_new.set()

    async def hint_reader(hints: HintClient) -> None:
        while not stop.is_set():
            result = await hints.hints("u1")
            record("hints", [h.query for h in result.hints if h.source == "x2q"])

    async def lookup_reader(reader: X2QStore) -> None:
        while not stop.is_set():
            found = await reader.lookup(chosen, per_trigger=per_trigger)
            record("lookup", [q for queries in found for q in queries])

    lookup_client = open_redis(redis_settings)
    made = [client_for(redis_settings, prefix, per_trigger=per_trigger, timeout_ms=10_000)]
    made.append(client_for(redis_settings, prefix, per_trigger=per_trigger, timeout_ms=10_000))
    reader_store = X2QStore(lookup_client, prefix=prefix)
    tasks = [asyncio.create_task(hint_reader(h)) for h in made for _ in range(2)]
    tasks += [asyncio.create_task(lookup_reader(reader_store)) for _ in range(2)]
    marks = []  # len(reads) at each switch
    try:
        await asyncio.wait_for(seen_new.wait(), 30)
        for n in range(switches):
            tag = "b" if n % 2 == 0 else "a"
            version = await store.begin()
            await store.write_many(index(tag, triggers), version)
            expected[0] = tag  # no read can see ``tag`` before the switch
            kinds_seen.clear()
            seen_new.clear()
            await store.switch(version)
            marks.append(len(reads))
            await asyncio.wait_for(seen_new.wait(), 30)  # both kinds read the new version
    finally:
        stop.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for hints in made:
            await hints.aclose()
        await lookup_client.aclose()
    assert [r for r in results if r is not None] == []
    assert bad == []
    assert await store.current() == version
    edges = [0, *marks, len(reads)]
    segments = [reads[lo:hi] for lo, hi in itertools.pairwise(edges)]
    assert all(segment for segment in segments)  # reads before and after every switch
    count = {kind: sum(1 for k, _ in reads if k == kind) for kind in ("hints", "lookup")}
    print(
        f"\nx2q switch test: {switches} switches, {len(reads)} reads "
        f"({count['hints']} hint reads, {count['lookup']} lookups), 0 mixed; "
        f"fewest reads between two switches {min(len(s) for s in segments[1:-1])}"
    )


async def test_unreachable_redis_is_a_service_error() -> None:
    settings = RedisSettings(url=f"redis://127.0.0.1:{free_port()}/0")
    async with open_redis(settings, timeout_s=0.5, retries=0) as client:
        store = X2QStore(client)
        with pytest.raises(ServiceError, match="x2q version reservation"):
            await store.begin()
        with pytest.raises(ServiceError, match="x2q switch"):
            await store.switch("v000001")
        with pytest.raises(ServiceError, match="x2q pointer read"):
            await store.current()
        with pytest.raises(ServiceError, match="x2q pointer read"):
            await store.discard("v000001")
