"""Popular queries: the fallback for a user with neither a u2q run nor an x2q hit.

Layout: ONE sorted set at ``<prefix>popular``, member = query, score = popularity (searches,
clicks, whatever the writer counts); the read path takes the top ``k``. A job (or an operator)
replaces it whole with :meth:`PopularQueries.write`. When it is empty or missing, the read
path falls back to the static list in ``AIGQ_HINTS_POPULAR_FALLBACK``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

from redis.asyncio import Redis
from redis.exceptions import RedisError

from aigq.safety import is_blocked
from cache.errors import CacheError


class PopularQueries:
    """Writes and reads the popular-query sorted set."""

    def __init__(self, redis: Redis, prefix: str = "aigq:") -> None:
        self._redis = redis
        self.key = f"{prefix}popular"

    async def write(self, scored: Sequence[tuple[str, float]], ttl_s: int | None = None) -> int:
        """Replace the set with ``(query, score)`` pairs atomically; return how many were kept.

        Blank and blocked (:mod:`aigq.safety`) queries are dropped; a query given twice keeps its
        highest score. An empty sequence deletes the set (the static fallback then applies).
        """
        best: dict[str, float] = {}
        for query, score in scored:
            if not math.isfinite(score):
                raise ValueError(f"score of {query!r} must be finite, got {score!r}")
            text = query.strip()
            if text and not is_blocked(text):
                best[text] = max(score, best.get(text, score))
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.delete(self.key)
                if best:
                    pipe.zadd(self.key, best)
                    if ttl_s is not None:
                        pipe.expire(self.key, ttl_s)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise CacheError(f"popular-query write failed: {exc}") from exc
        return len(best)

    async def top(self, n: int) -> list[str]:
        """The ``n`` most popular queries, most popular first (ties: reverse lexicographic)."""
        if n < 1:
            return []
        try:
            raw = cast("list[bytes]", await self._redis.zrevrange(self.key, 0, n - 1))
        except (RedisError, OSError) as exc:
            raise CacheError(f"popular-query read failed: {exc}") from exc
        return [q.decode() for q in raw]
