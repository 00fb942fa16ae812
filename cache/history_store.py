"""Each user's search history in Redis: the top of the fold the session worker keeps.

The session worker folds every search into the user's history (:mod:`cache.history`, pure, in
the session state) and, at each flush, writes the top :data:`STORED` queries of each user who
searched since the last flush here; the read path (:mod:`cache.hints`) reads them in its one
Lua call and :func:`cache.compose.compose` puts them in the served list.

Layout: ONE Redis string per user at ``<prefix>history:<user_id>`` holding a JSON array of
normalised queries, strongest first (count discounted by age: the fold's order), the
same shape as an x2q entry, so the read script fetches it with one ``GET`` and it decodes with
:func:`cache.x2q.decode_queries`. The value is a function of the session state, so a write
replaces it whole (one ``SET``: a reader sees it before or after), and a replayed flush writes
the same value again. It expires ``ttl_s`` after the user's last search.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from cache.errors import CacheError
from cache.history import TOP_STORED
from cache.x2q import decode_queries

STORED = TOP_STORED
"""Queries written per user: the most the read path may ask for (``AIGQ_HINTS_HISTORY``)."""
_USERS_PER_CALL = 1_000  # bounds how long one script call holds Redis (a few ms)

# KEYS: users' history keys. ARGV: ttl_s, then one JSON value per key.
_WRITE = """
local ttl = ARGV[1]
for i, key in ipairs(KEYS) do
  redis.call('SET', key, ARGV[i + 1], 'EX', ttl)
end
return #KEYS
"""


def decode_history(raw: bytes | str) -> list[str]:
    """A stored value back into its queries; raise CorruptEntryError if it is not a list."""
    return decode_queries(raw, "history")


class HistoryStore:
    """Writes and reads the per-user history entries (see the module docstring)."""

    def __init__(self, redis: Redis, prefix: str = "aigq:", ttl_s: int = 30 * 86_400) -> None:
        if ttl_s < 1:
            raise ValueError(f"ttl_s must be >= 1, got {ttl_s}")
        self._redis = redis
        self._write = redis.register_script(_WRITE)
        self._prefix = prefix
        self.ttl_s = ttl_s

    def key(self, user_id: str) -> str:
        if not user_id:
            raise ValueError("user_id must be non-empty")
        return f"{self._prefix}history:{user_id}"

    async def write_many(self, entries: Sequence[tuple[str, Sequence[str]]]) -> int:
        """Replace the entries of ``(user_id, queries)``: one script call per 1,000 users.

        ``queries`` are strongest first (:func:`cache.history.top_queries`) and cut to
        :data:`STORED`; an entry without queries is skipped (a history never empties). Returns
        the number of users written. Raises CacheError when Redis fails; then some users may be
        written and others not, and writing them again is safe.
        """
        prepared: list[tuple[str, bytes]] = []
        for user_id, queries in entries:
            if isinstance(queries, str):
                raise ValueError("queries must be a sequence of str, not a str")
            if queries:
                prepared.append((self.key(user_id), orjson.dumps(list(queries[:STORED]))))
        try:
            for start in range(0, len(prepared), _USERS_PER_CALL):
                chunk = prepared[start : start + _USERS_PER_CALL]
                await self._write(
                    keys=[key for key, _ in chunk],
                    args=[self.ttl_s, *(value for _, value in chunk)],
                )
        except (RedisError, OSError) as exc:
            raise CacheError(f"history write of {len(prepared)} users failed: {exc}") from exc
        return len(prepared)

    async def read(self, user_id: str, n: int = STORED) -> list[str]:
        """The user's first ``n`` history queries (``[]`` when none are stored)."""
        key = self.key(user_id)
        try:
            raw = await self._redis.get(key)
        except (RedisError, OSError) as exc:
            raise CacheError(f"history read of {key!r} failed: {exc}") from exc
        return [] if raw is None else decode_history(raw)[:n]
