"""The shared regeneration budget, against the real Redis (its Lua script is the logic)."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from cache.budget import BudgetPolicy, SharedBudget

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]


async def test_nothing_is_granted_without_a_live_generator(redis: tuple[Redis, str]) -> None:
    client, prefix = redis
    budget = SharedBudget(client, prefix)
    grant = await budget.take(10)
    assert (grant.granted, grant.generators, grant.capacity) == (0, 0, 0.0)


async def test_the_bucket_refills_at_headroom_times_capacity_shared_by_every_taker(
    redis: tuple[Redis, str],
) -> None:
    client, prefix = redis
    policy = BudgetPolicy(headroom=2.0, burst_s=1.0, max_queue_s=100.0)
    workers = [SharedBudget(client, prefix, policy) for _ in range(3)]
    await workers[0].publish("gen-a", 30.0, 0)
    await workers[0].publish("gen-b", 20.0, 0)
    await workers[0].take(0)  # the bucket starts empty, now
    await asyncio.sleep(0.3)  # 50 lists/s x 2 x 0.3 s = 30 tokens
    grants = await asyncio.gather(*(w.take(1_000) for w in workers))
    total = sum(g.granted for g in grants)
    assert 25 <= total <= 50  # one bucket: the three draw on the same 30-odd tokens
    assert grants[0].capacity == 50.0 and grants[0].generators == 2
    await asyncio.sleep(1.5)
    assert (await workers[1].take(1_000)).granted == 50  # never more than burst_s of capacity


async def test_no_grant_takes_the_backlog_past_max_queue_seconds(redis: tuple[Redis, str]) -> None:
    client, prefix = redis
    budget = SharedBudget(client, prefix, BudgetPolicy(burst_s=10.0, max_queue_s=2.0))
    await budget.publish("gen", 10.0, 15)  # room for 2 s x 10/s = 20: 5 more
    await budget.take(0)
    await asyncio.sleep(0.5)  # 10 tokens
    assert (await budget.take(100)).granted == 5
    await budget.publish("gen", 10.0, 25)
    await asyncio.sleep(0.2)
    grant = await budget.take(100)
    assert grant.granted == 0 and grant.backlog == 25.0


async def test_the_generators_full_slots_are_room_when_seconds_of_capacity_are_less(
    redis: tuple[Redis, str],
) -> None:
    client, prefix = redis
    budget = SharedBudget(client, prefix, BudgetPolicy(burst_s=100.0, max_queue_s=2.0))
    await budget.publish("gen", 10.0, 15, slots=64)  # 2 s x 10/s = 20 < 64: room 49
    await budget.take(0)
    await asyncio.sleep(3.0)  # 60 tokens
    assert (await budget.take(1_000)).granted == 49


async def test_a_generator_that_stopped_publishing_drops_out(redis: tuple[Redis, str]) -> None:
    client, prefix = redis
    budget = SharedBudget(client, prefix, BudgetPolicy(stale_s=0.2))
    await budget.publish("gone", 10.0, 0)
    await budget.publish("alive", 5.0, 0)
    assert (await budget.take(0)).generators == 2
    await asyncio.sleep(0.3)
    await budget.publish("alive", 5.0, 0)
    grant = await budget.take(0)
    assert (grant.generators, grant.capacity) == (1, 5.0)
    assert await client.hkeys(budget.generators_key) == [b"alive"]
