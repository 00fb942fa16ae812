"""Each user's most recent triggers: the latest clicked items, categories and searched queries.

The online read path looks these up in the x2q index, to cover what the user did after their
newest u2q run was generated (paper §4: "the user's latest triggers (e.g. the last clicked
item) look up x2q"). The session agents write them; :mod:`cache.hints` reads them.

Layout: ONE sorted set per user at ``<prefix>recent:<user_id>``; each member is a trigger key
``<kind>:<normalised text>`` (kind ``query``, ``category`` or ``item``; text normalised by
:func:`cache.text.normalize` and cut to 200 characters), scored by the event time in UTC
epoch milliseconds. The x2q index keys a trigger's queries by the same member
(``<prefix>x2q:<version>:<member>``, :mod:`cache.x2q`), which is what lets a Lua script go
from one to the other inside Redis in a single round trip.

Why a sorted set: a trigger repeated is one member (its newest time wins, ``ZADD GT``), the
order is event time rather than arrival order (the worker can see a click before the search it
followed), a replayed event changes nothing, and trimming to the newest ``keep`` is one
``ZREMRANGEBYRANK``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple, cast, get_args

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from cache.errors import CacheError
from cache.text import MAX_KEY_CHARS, normalize

TriggerKind = Literal["query", "category", "item"]
TRIGGER_KINDS: tuple[TriggerKind, ...] = get_args(TriggerKind)
_MAX_TS = 2**53  # scores are doubles: integers up to here are exact
_USERS_PER_CALL = 1_000  # bounds how long one script call holds Redis (a few ms)

# KEYS: users' sets. ARGV: keep, ttl_s, JSON list (one per key) of flat [ts, member, ...], the
# times as strings so that they reach ZADD exactly.
_RECORD = """
local keep, ttl = tonumber(ARGV[1]), tonumber(ARGV[2])
local all = cjson.decode(ARGV[3])
for i, key in ipairs(KEYS) do
  local flat = all[i]
  for j = 1, #flat, 2 do
    redis.call('ZADD', key, 'GT', flat[j], flat[j + 1])
  end
  redis.call('ZREMRANGEBYRANK', key, 0, -(keep + 1))
  redis.call('EXPIRE', key, ttl)
end
return #KEYS
"""


class Trigger(NamedTuple):
    """One recent trigger of a user: its kind, normalised text and event time (UTC ms)."""

    kind: TriggerKind
    text: str
    ts: int

    @property
    def member(self) -> str:
        return f"{self.kind}:{self.text}"


def trigger_member(kind: str, text: str) -> str:
    """The key of a trigger, ``<kind>:<normalised text>``; ``""`` when the text normalises away.

    Raises ValueError for an unknown kind (a programming error, not bad data).
    """
    if kind not in TRIGGER_KINDS:
        raise ValueError(f"trigger kind must be one of {TRIGGER_KINDS}, got {kind!r}")
    norm = normalize(text, MAX_KEY_CHARS)
    return f"{kind}:{norm}" if norm else ""


def parse_member(member: bytes | str, score: float | bytes | str) -> Trigger | None:
    """A stored member and score back into a Trigger; None if it is not one we wrote."""
    text = member.decode("utf-8", "replace") if isinstance(member, bytes) else member
    kind, sep, rest = text.partition(":")
    if not sep or not rest or kind not in TRIGGER_KINDS:
        return None
    try:
        ts = int(float(score))
    except ValueError:
        return None
    return Trigger(kind, rest, ts)


class RecentTriggers:
    """Writes and reads the per-user recent-trigger sets (see the module docstring)."""

    def __init__(
        self, redis: Redis, prefix: str = "aigq:", keep: int = 10, ttl_s: int = 7 * 86_400
    ) -> None:
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        if ttl_s < 1:
            raise ValueError(f"ttl_s must be >= 1, got {ttl_s}")
        self._redis = redis
        self._record = redis.register_script(_RECORD)
        self._prefix = prefix
        self.keep = keep
        self.ttl_s = ttl_s

    def key(self, user_id: str) -> str:
        if not user_id:
            raise ValueError("user_id must be non-empty")
        return f"{self._prefix}recent:{user_id}"

    async def record_many(self, items: Sequence[tuple[str, str, str, int]]) -> int:
        """Record ``(user_id, kind, text, ts_ms)`` triggers: one script call per 1,000 users.

        The contract for the session agents:

        - ``kind`` is ``"query"`` (a search's query text, or a clicked hint query),
          ``"item"`` (a clicked item's ``item_id``) or ``"category"`` (the most specific
          level of a clicked item's category path, i.e. ``category[-1]``); the offline x2q
          builder keys its index the same way. Any other kind raises ValueError.
        - ``text`` is taken as it came; it is normalised here (NFKC, case-folded, whitespace
          collapsed, 200 characters at most). Text that normalises to nothing is skipped.
        - ``ts_ms`` is the event's time in UTC epoch milliseconds (an int in 0..2**53); the
          set is ordered by it, so arrival order does not matter.
        - Idempotent: a replayed event changes nothing (a trigger keeps its newest time), so
          calling it again after an error is safe. A user's set keeps the newest ``keep``
          triggers and expires ``ttl_s`` after their last write.
        - Several items of one user, and many users, can go in one call (one call per flush is
          the intended use); an empty sequence does nothing. Items are validated before anything
          is sent.

        Returns the number of triggers sent (after skipping empty ones). Raises CacheError
        when Redis fails; then some users may be written and others not.
        """
        by_user: dict[str, dict[str, int]] = {}
        for user_id, kind, text, ts in items:
            if isinstance(ts, bool) or not isinstance(ts, int) or not 0 <= ts <= _MAX_TS:
                raise ValueError(f"ts_ms must be an int in 0..2**53, got {ts!r}")
            key = self.key(user_id)
            member = trigger_member(kind, text)
            if not member:
                continue
            members = by_user.setdefault(key, {})
            members[member] = max(ts, members.get(member, ts))
        if not by_user:
            return 0
        # One script call per chunk of users, not three commands per user: a session worker
        # flushes thousands of users a second, and redis-py's pipeline packing and parsing of
        # those commands was 6% of its time (py-spy); the script packs them as one JSON string.
        users = list(by_user.items())
        try:
            for start in range(0, len(users), _USERS_PER_CALL):
                chunk = users[start : start + _USERS_PER_CALL]
                flat = [
                    [x for m, ts in members.items() for x in (str(ts), m)] for _, members in chunk
                ]
                await self._record(
                    keys=[key for key, _ in chunk],
                    args=[self.keep, self.ttl_s, orjson.dumps(flat)],
                )
        except (RedisError, OSError) as exc:
            raise CacheError(f"recent-trigger write of {len(by_user)} users failed: {exc}") from exc
        return sum(len(m) for m in by_user.values())

    async def latest(self, user_id: str, n: int | None = None) -> list[Trigger]:
        """The user's newest ``n`` (default ``keep``) triggers, newest first."""
        key = self.key(user_id)
        count = self.keep if n is None else n
        if count < 1:
            return []
        try:
            raw = cast(
                "list[tuple[bytes, float]]",
                await self._redis.zrevrange(key, 0, count - 1, withscores=True),
            )
        except (RedisError, OSError) as exc:
            raise CacheError(f"recent-trigger read of {key!r} failed: {exc}") from exc
        parsed = (parse_member(member, score) for member, score in raw)
        return [trigger for trigger in parsed if trigger is not None]
