"""The x2q index: trigger -> ordered hint queries (paper §4, "x2q real-time").

Offline, AIGQ-Think emits ``{T_k -> Q_k}`` pairs; every trigger ``x`` in ``T_k`` maps to
``Q_k``, ranked by ``S(x, q)``. Online, the user's recent triggers (:mod:`cache.recent`) look
it up to cover what the newest u2q run has not seen yet.

Layout: ONE Redis string per trigger at ``<prefix>x2q:<kind>:<normalised text>`` (the trigger
key of :func:`cache.recent.trigger_member`) holding a JSON array of queries in rank order,
best first, with a TTL, so a daily rebuild that stops leaves nothing stale behind for long.
A string rather than a list: the read script then fetches a trigger's queries as one value
(``GET``), which measured a third less Redis CPU per request than ``LRANGE`` of ten elements,
and a writer replaces it atomically with one ``SET``.

An index that does not exist yet is not an error: every lookup then returns empty lists. The
read path in :mod:`cache.hints` reads these keys inside its Lua script; this class is the
write side (the offline builder, tests, the benchmark) and a plain lookup with the same layout.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from cache.errors import CacheError, CorruptEntryError
from cache.recent import trigger_member


def decode_queries(raw: bytes | str, what: str = "x2q") -> list[str]:
    """A stored value back into its queries; raise CorruptEntryError if it is not a list.

    ``what`` names the entry in the error (a user's history, :mod:`cache.history_store`, is
    stored the same way)."""
    try:
        queries = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise CorruptEntryError(f"undecodable {what} entry {raw[:200]!r}: {exc}") from exc
    try:
        if isinstance(queries, list):
            "".join(queries)  # a TypeError unless every element is a str; fast in C
            return queries
    except TypeError:
        pass
    raise CorruptEntryError(f"{what} entry is not a list of strings: {raw[:200]!r}")


class X2QStore:
    """Writes and reads the trigger -> queries entries."""

    def __init__(
        self, redis: Redis, prefix: str = "aigq:", ttl_s: int = 2 * 86_400, max_queries: int = 50
    ) -> None:
        if ttl_s < 1 or max_queries < 1:
            raise ValueError(f"ttl_s and max_queries must be >= 1, got {ttl_s}, {max_queries}")
        self._redis = redis
        self.key_prefix = f"{prefix}x2q:"
        self.ttl_s = ttl_s
        self.max_queries = max_queries

    def key(self, kind: str, text: str) -> str:
        member = trigger_member(kind, text)
        if not member:
            raise ValueError(f"trigger text {text!r} is empty once normalised")
        return self.key_prefix + member

    async def write_many(self, entries: Sequence[tuple[str, str, Sequence[str]]]) -> None:
        """Replace the entries of ``(kind, text, queries)`` triggers in one round trip.

        Queries keep their order (best first) and are cut to ``max_queries``; blank ones are
        dropped. An entry with no queries deletes that trigger. Each entry is one ``SET``, so
        a reader sees it before or after, never half written.
        """
        prepared = []
        for kind, text, queries in entries:
            if isinstance(queries, str):
                raise ValueError("queries must be a sequence of str, not a str")
            kept = [q.strip() for q in queries if q.strip()][: self.max_queries]
            prepared.append((self.key(kind, text), kept))
        if not prepared:
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key, kept in prepared:
                    if kept:
                        pipe.set(key, orjson.dumps(kept), ex=self.ttl_s)
                    else:
                        pipe.delete(key)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise CacheError(f"x2q write of {len(prepared)} triggers failed: {exc}") from exc

    async def lookup(
        self, triggers: Sequence[tuple[str, str]], per_trigger: int = 10
    ) -> list[list[str]]:
        """The first ``per_trigger`` queries of each ``(kind, text)``, in input order.

        A trigger the index does not have (or an index that does not exist) gives ``[]``.
        """
        keys = [self.key(kind, text) for kind, text in triggers]
        if not keys:
            return []
        try:
            values = await self._redis.mget(keys)
        except (RedisError, OSError) as exc:
            raise CacheError(f"x2q lookup of {len(keys)} triggers failed: {exc}") from exc
        return [[] if raw is None else decode_queries(raw)[:per_trigger] for raw in values]
