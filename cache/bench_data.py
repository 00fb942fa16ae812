"""The benchmark's data set: ``users`` users' u2q runs, recent triggers and search histories,
an x2q index, popular queries, and one plain string key per user for the raw-GET baseline.

Every user has a u2q run (10 queries, written through :class:`cache.u2q.U2QStore`),
``triggers_per_user`` recent triggers, about half newer than the run, and a search history of
``history_per_user`` queries (the worker stores up to 20); four in five triggers are in the x2q
index (10 queries each, one version written then switched to, as the offline builder does).
Keys live under one prefix and are deleted after.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

from redis.asyncio import Redis

from cache.history_store import HistoryStore
from cache.popular import PopularQueries
from cache.recent import RecentTriggers
from cache.u2q import U2QRun, U2QStore, encode_run
from cache.x2q import X2QStore

_WORDS = (  # noqa: SIM905 (a list literal of 80 words would be 80 lines)
    "running shoes trail jacket rain wool socks hiking boots winter coat summer dress linen "
    "shirt denim jeans leather wallet phone case charger cable wireless earbuds laptop stand "
    "desk lamp coffee grinder kettle tea set cast iron pan chef knife cutting board yoga mat "
    "dumbbell kettlebell backpack tent sleeping bag camping stove water bottle sunglasses "
    "watch strap ring necklace perfume lipstick serum shampoo razor baby stroller toy car lego "
    "puzzle board game novel notebook pen ink printer paper garden hose seeds flower pot"
).split()


@dataclass(frozen=True)
class BenchData:
    prefix: str
    users: int
    user_prefix: str = "user"

    def user(self, i: int) -> str:
        return f"{self.user_prefix}{i:06d}"

    @property
    def raw_prefix(self) -> str:
        return f"{self.prefix}raw:"


def _query(rng: random.Random) -> str:
    return " ".join(rng.sample(_WORDS, rng.randint(2, 3)))


def _trigger(i: int) -> tuple[str, str]:
    kind = ("item", "category", "query")[i % 3]
    return kind, f"{kind} {i}"


async def load(
    redis: Redis,
    data: BenchData,
    triggers_per_user: int = 3,
    history_per_user: int = 5,
    x2q_triggers: int = 20_000,
    batch: int = 2_000,
    seed: int = 0,
) -> float:
    """Write the data set; return the seconds it took."""
    started = time.monotonic()
    rng = random.Random(seed)
    now = int(time.time() * 1000)
    x2q = X2QStore(redis, prefix=data.prefix, ttl_s=3_600)
    version = await x2q.begin()  # as the offline builder does: write it whole, then switch
    for lo in range(0, x2q_triggers, batch):
        await x2q.write_many(
            [
                (*_trigger(i), [_query(rng) for _ in range(10)])
                for i in range(lo, min(lo + batch, x2q_triggers))
            ],
            version,
        )
    await x2q.switch(version)
    await PopularQueries(redis, prefix=data.prefix).write(
        [(_query(rng), float(rng.randint(1, 10_000))) for _ in range(200)], ttl_s=3_600
    )
    u2q = U2QStore(redis, prefix=data.prefix, keep_runs=3, ttl_s=3_600)
    recent = RecentTriggers(redis, prefix=data.prefix, keep=10, ttl_s=3_600)
    history = HistoryStore(redis, prefix=data.prefix, ttl_s=3_600)
    for lo in range(0, data.users, batch):
        runs: list[tuple[str, U2QRun]] = []
        triggers: list[tuple[str, str, str, int]] = []
        searched: list[tuple[str, list[str]]] = []
        for i in range(lo, min(lo + batch, data.users)):
            event_ts = now - rng.randint(60_000, 3_600_000)
            run = U2QRun(
                queries=tuple(_query(rng) for _ in range(10)),
                model_version="bench-direct-1",
                session_version=rng.randint(1, 10_000),
                event_ts=event_ts,
                generated_ts=event_ts + rng.randint(300, 3_000),
                reason="drift",
            )
            runs.append((data.user(i), run))
            searched.append((data.user(i), [_query(rng) for _ in range(history_per_user)]))
            for _ in range(triggers_per_user):
                index = rng.randrange(x2q_triggers * 5 // 4)  # one in five is not indexed
                ts = event_ts + rng.randint(-600_000, 600_000)
                triggers.append((data.user(i), *_trigger(index), ts))
        await u2q.write_many(runs)
        await recent.record_many(triggers)
        await history.write_many(searched)
        await _raw(redis, data, runs)
    return time.monotonic() - started


async def _raw(redis: Redis, data: BenchData, runs: Sequence[tuple[str, U2QRun]]) -> None:
    """One string per user holding its run: what the raw-GET baseline reads."""
    async with redis.pipeline(transaction=False) as pipe:
        for user, run in runs:
            pipe.set(
                f"{data.raw_prefix}{user.removeprefix(data.user_prefix)}", encode_run(run), ex=3_600
            )
        await pipe.execute()


async def delete(redis: Redis, prefix: str) -> int:
    """Delete every key under ``prefix``; return how many."""
    deleted = 0
    batch: list[bytes] = []
    async for key in redis.scan_iter(match=f"{prefix}*", count=5_000):
        batch.append(key)
        if len(batch) >= 5_000:
            deleted += await redis.unlink(*batch)
            batch.clear()
    if batch:
        deleted += await redis.unlink(*batch)
    return deleted
