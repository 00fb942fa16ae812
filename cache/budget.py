"""One regeneration budget for the whole deployment, kept in Redis.

The model is the slowest part of the loop, so it sets the pace: every generator publishes,
about once a second, its measured capacity (lists/s), its backlog (requests read or left in its
partitions and not yet answered) and how many requests its slots hold at once under
``<prefix>budget:generators``, one field per generator, each stamped with Redis's own clock.
Every session worker, at each flush, asks the shared bucket ``<prefix>budget:bucket`` how many
regeneration requests it may emit now. One Lua script answers, atomically, so all workers
draw on one bucket (not one each):

- the live generators' capacities are summed (an entry older than ``stale_s`` is a generator
  that stopped: it is removed);
- the bucket refills at ``headroom`` x that capacity per second, up to ``burst_s`` seconds of
  it (headroom above 1 lets a generator that is measured at a low load show it can do more);
- a grant never takes the generators' summed backlog past ``max_queue_s`` seconds of their
  capacity, or what their generation slots hold at once if that is more (``max_in_flight`` x
  ``batch_size``: a model batches better full, measured 38 against 60 lists/s here): a queue
  of at most a few seconds in front of the model, whatever the rate asked.

With no live generator nothing is granted: what the workers would emit waits (see
:mod:`streams.processor`). Redis's ``TIME`` is the only clock, so skewed hosts do not matter.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from cache.errors import CacheError

# KEYS: generators hash, bucket hash. ARGV: wanted, stale_ms, headroom, burst_s, max_queue_s.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local wanted, stale = tonumber(ARGV[1]), tonumber(ARGV[2])
local headroom, burst_s, queue_s = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local entries = redis.call('HGETALL', KEYS[1])
local capacity, backlog, slots, live = 0, 0, 0, 0
for i = 1, #entries, 2 do
  local c, b, f, ts = string.match(entries[i + 1], '^([^,]+),([^,]+),([^,]+),([^,]+)$')
  if ts == nil or now - tonumber(ts) > stale then
    redis.call('HDEL', KEYS[1], entries[i])
  else
    capacity = capacity + tonumber(c)
    backlog = backlog + tonumber(b)
    slots = slots + tonumber(f)
    live = live + 1
  end
end
local state = redis.call('HMGET', KEYS[2], 'tokens', 'ts')
local tokens = tonumber(state[1]) or 0
local last = tonumber(state[2]) or now
local burst = math.max(capacity * burst_s, 1)
tokens = math.min(burst, tokens + capacity * headroom * math.max(now - last, 0) / 1000)
local room = math.floor(math.max(capacity * queue_s, slots) - backlog)
local grant = math.max(0, math.min(wanted, math.floor(tokens), room))
if live == 0 then grant = 0 end
tokens = tokens - grant
redis.call('HSET', KEYS[2], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[2], 600000)
return {grant, tostring(capacity), tostring(backlog), live}
"""

_PUBLISH = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ',' .. ARGV[3] .. ',' .. ARGV[4] .. ',' .. now)
redis.call('PEXPIRE', KEYS[1], 600000)
return now
"""


@dataclass(frozen=True, slots=True)
class Grant:
    """What the bucket answered: requests the worker may emit now, and what it saw."""

    granted: int
    capacity: float  # lists/s of the live generators together
    backlog: float  # their requests not yet answered
    generators: int  # live generators


@dataclass(frozen=True)
class BudgetPolicy:
    """The bucket's knobs (see the module doc)."""

    stale_s: float = 5.0
    headroom: float = 2.0
    burst_s: float = 1.0
    max_queue_s: float = 2.0

    def __post_init__(self) -> None:
        if min(self.stale_s, self.headroom, self.burst_s, self.max_queue_s) <= 0:
            raise ValueError("every budget knob must be > 0")


class SharedBudget:
    """The Redis side of the budget: generators :meth:`publish`, workers :meth:`take`."""

    def __init__(self, redis: Redis, prefix: str = "aigq:", policy: BudgetPolicy | None = None):
        self.redis, self.policy = redis, policy or BudgetPolicy()
        self.generators_key = f"{prefix}budget:generators"
        self.bucket_key = f"{prefix}budget:bucket"

    async def publish(self, member: str, capacity: float, backlog: int, slots: int = 0) -> None:
        """One generator's measured capacity (lists/s), backlog (requests), and how many
        requests its generation slots hold at once (``max_in_flight`` x ``batch_size``)."""
        try:
            await self.redis.eval(
                _PUBLISH, 1, self.generators_key, member, f"{capacity:.3f}", str(backlog),
                str(slots),
            )  # fmt: skip
        except RedisError as exc:
            raise CacheError(f"budget publish: {exc!r}") from exc

    async def take(self, wanted: int) -> Grant:
        """Up to ``wanted`` requests' worth of the shared bucket."""
        p = self.policy
        try:
            granted, capacity, backlog, live = await self.redis.eval(
                _TAKE, 2, self.generators_key, self.bucket_key,
                str(max(wanted, 0)), str(int(p.stale_s * 1000)), str(p.headroom),
                str(p.burst_s), str(p.max_queue_s),
            )  # fmt: skip
        except RedisError as exc:
            raise CacheError(f"budget take: {exc!r}") from exc
        return Grant(int(granted), float(capacity), float(backlog), int(live))
