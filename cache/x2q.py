"""The x2q index: trigger -> ordered hint queries (paper §4, "x2q real-time").

Offline, AIGQ-Think emits ``{T_k -> Q_k}`` pairs; every trigger ``x`` in ``T_k`` maps to
``Q_k``, ranked by ``S(x, q)``. Online, the user's recent triggers (:mod:`cache.recent`) look
it up to cover what the newest u2q run has not seen yet.

Layout: the index is VERSIONED, because the offline builder rebuilds it whole every day and a
reader must see the old index or the new one, never a mix of the two:

- ``<prefix>x2q:<version>:<kind>:<normalised text>``: ONE Redis string per trigger (the trigger
  key of :func:`cache.recent.trigger_member`) holding a JSON array of queries in rank order,
  best first, with a TTL (``ttl_s``, 2 days), so a build that is never switched to, or a
  daily rebuild that stops, leaves nothing stale behind for long. A string rather than a
  list: the read script then fetches a trigger's queries as one value (``GET``), which
  measured a third less Redis CPU per request than ``LRANGE`` of ten elements.
- ``<prefix>x2q:current``: the version readers use, e.g. ``v000012``; no TTL.
- ``<prefix>x2q:next``: the counter versions come from (``INCR``).

A build is :meth:`X2QStore.begin` (reserve a version; readers do not see it), any number of
:meth:`X2QStore.write_many` into it, then :meth:`X2QStore.switch`: one ``SET`` of the pointer
inside a Lua script, so every reader moves from one complete index to the other at one instant.
The previous version's keys are then given a short expiry (``grace_s``) rather than deleted,
so a reader that read the old pointer a moment ago still finds its entries. Versions only go
forward: switching to a version older than the current one is refused, so a build that finishes
late cannot replace a newer index (nor revive one whose keys are expiring).

An index that does not exist yet (no pointer) is not an error: every lookup then returns empty
lists. The read path in :mod:`cache.hints` reads the pointer and the entries inside its Lua
script, one atomic step; this class is the write side (the offline builder, tests, the
benchmark) and a plain lookup that reads the same way.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import cast

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from aigq.logging import get_logger
from cache.errors import CacheError, CorruptEntryError
from cache.recent import trigger_member

log = get_logger(__name__)

VERSION_RE = re.compile(r"v\d{6}")
_MAX_VERSION = 999_999
_SCAN_BATCH = 1_000  # keys per SCAN step and per EXPIRE/UNLINK pipeline

# KEYS: pointer, counter. ARGV: the version, its number.
# Returns {outcome, previous version or ''}: 'ok' (switched, or already current), 'unreserved'
# (no begin() gave that number) or 'stale' (the current version is newer; nothing changed).
_SWITCH_LUA = """
local n = tonumber(ARGV[2])
if n > (tonumber(redis.call('GET', KEYS[2]) or '0') or 0) then return {'unreserved', ''} end
local old = redis.call('GET', KEYS[1])
if old then
  local m = tonumber(string.match(old, '^v(%d+)$') or '')
  if m and m > n then return {'stale', old} end
end
redis.call('SET', KEYS[1], ARGV[1])
return {'ok', old or ''}
"""

# KEYS: pointer. ARGV: x2q key prefix, then the trigger members. Returns one entry (or nil)
# per member, all from the version the pointer named when the script ran; no pointer, none.
# An entry of the wrong type reads as missing, as MGET would.
_LOOKUP_LUA = """
local version = redis.call('GET', KEYS[1])
local entries = {}
for i = 2, #ARGV do
  local entry = false
  if version then entry = redis.pcall('GET', ARGV[1] .. version .. ':' .. ARGV[i]) end
  if type(entry) == 'table' then entry = false end
  entries[i - 1] = entry
end
return entries
"""


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


def check_version(version: str) -> str:
    """Return ``version`` if it is ``v`` and six digits, else raise ValueError."""
    if not isinstance(version, str) or not VERSION_RE.fullmatch(version):
        raise ValueError(f"x2q version must be 'v' and 6 digits, got {version!r}")
    return version


def _text(value: bytes | str) -> str:
    """A reply as text, whether or not the client decodes responses."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _glob_escape(text: str) -> str:
    """``text`` as a literal in a SCAN MATCH pattern (a key prefix may hold ``*?[]\\``)."""
    return re.sub(r"([\\*?\[\]])", r"\\\1", text)


class X2QStore:
    """Writes, switches and reads the versioned trigger -> queries entries."""

    def __init__(
        self,
        redis: Redis,
        prefix: str = "aigq:",
        ttl_s: int = 2 * 86_400,
        max_queries: int = 50,
        grace_s: int = 600,
    ) -> None:
        if ttl_s < 1 or max_queries < 1 or grace_s < 1:
            raise ValueError(
                f"ttl_s, max_queries and grace_s must be >= 1, got {ttl_s}, {max_queries}, "
                f"{grace_s}"
            )
        self._redis = redis
        self._switch = redis.register_script(_SWITCH_LUA)
        self._lookup = redis.register_script(_LOOKUP_LUA)
        self.key_prefix = f"{prefix}x2q:"
        self.pointer_key = f"{self.key_prefix}current"
        self.counter_key = f"{self.key_prefix}next"
        self.ttl_s = ttl_s
        self.max_queries = max_queries
        self.grace_s = grace_s

    def key(self, kind: str, text: str, version: str) -> str:
        """The key of a trigger's entry in ``version``."""
        return f"{self.key_prefix}{check_version(version)}:{self._member(kind, text)}"

    @staticmethod
    def _member(kind: str, text: str) -> str:
        member = trigger_member(kind, text)
        if not member:
            raise ValueError(f"trigger text {text!r} is empty once normalised")
        return member

    async def begin(self) -> str:
        """Reserve a new version to build into; readers do not see it until :meth:`switch`."""
        try:
            number = int(await self._redis.incr(self.counter_key))
        except (RedisError, OSError) as exc:
            raise CacheError(f"x2q version reservation failed: {exc}") from exc
        if number > _MAX_VERSION:
            raise CacheError(f"x2q version counter {self.counter_key!r} passed {_MAX_VERSION}")
        return f"v{number:06d}"

    async def current(self) -> str | None:
        """The version readers use now; None before the first switch.

        Raises CorruptEntryError when the pointer holds something no switch wrote."""
        try:
            raw = await self._redis.get(self.pointer_key)
        except (RedisError, OSError) as exc:
            raise CacheError(f"x2q pointer read failed: {exc}") from exc
        if raw is None:
            return None
        version = _text(raw)
        if not VERSION_RE.fullmatch(version):
            raise CorruptEntryError(f"x2q pointer {self.pointer_key!r} holds {raw[:200]!r}")
        return version

    async def write_many(
        self, entries: Sequence[tuple[str, str, Sequence[str]]], version: str
    ) -> None:
        """Replace the entries of ``(kind, text, queries)`` triggers in ``version``, in one
        round trip.

        Queries keep their order (best first) and are cut to ``max_queries``; blank ones are
        dropped. An entry with no queries deletes that trigger. Each entry is one ``SET`` with
        the TTL ``ttl_s``. Any version may be written, the current one included (then readers
        see each entry change on its own); a builder writes only the one it began.
        """
        check_version(version)
        prepared = []
        for kind, text, queries in entries:
            if isinstance(queries, str):
                raise ValueError("queries must be a sequence of str, not a str")
            kept = [q.strip() for q in queries if q.strip()][: self.max_queries]
            prepared.append((self.key(kind, text, version), kept))
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

    async def switch(self, version: str) -> str | None:
        """Make ``version`` the one readers use, in one atomic step; return the previous one.

        The previous version's keys then expire within ``grace_s`` (found with ``SCAN``, in
        batches); a switch to the version already current changes nothing. Raises ValueError
        for a version :meth:`begin` never gave, or one older than the current version (a late
        build must not replace a newer index). If this process dies before the expiry is set,
        the previous version's keys still go within their own ``ttl_s``.
        """
        number = int(check_version(version)[1:])
        try:
            outcome, old = cast(
                "list[bytes | str]",
                await self._switch(
                    keys=[self.pointer_key, self.counter_key], args=[version, number]
                ),
            )
        except (RedisError, OSError) as exc:
            raise CacheError(f"x2q switch to {version} failed: {exc}") from exc
        previous = _text(old) or None
        if _text(outcome) == "unreserved":
            raise ValueError(f"x2q version {version} was never reserved with begin()")
        if _text(outcome) == "stale":
            raise ValueError(f"x2q version {version} is older than the current {previous}")
        if previous is None or previous == version:
            return previous
        if not VERSION_RE.fullmatch(previous):
            log.warning("x2q_pointer_corrupt", pointer=self.pointer_key, held=previous[:200])
            return None
        expiring = await self._each_key(previous, "expire")
        log.info("x2q_switched", version=version, previous=previous, expiring=expiring)
        return previous

    async def discard(self, version: str) -> int:
        """Delete ``version``'s keys (an abandoned build); return how many were deleted.

        Raises ValueError for the current version: readers use it."""
        check_version(version)
        if version == await self.current():
            raise ValueError(f"x2q version {version} is current; switch away from it first")
        return await self._each_key(version, "unlink")

    async def _each_key(self, version: str, action: str) -> int:
        """``EXPIRE grace_s`` or ``UNLINK`` every key of ``version``, a batch at a time."""
        pattern = f"{_glob_escape(self.key_prefix)}{version}:*"
        done = 0
        batch: list[bytes | str] = []
        try:
            async for key in self._redis.scan_iter(match=pattern, count=_SCAN_BATCH):
                batch.append(key)
                if len(batch) >= _SCAN_BATCH:
                    done += await self._apply(batch, action)
                    batch.clear()
            if batch:
                done += await self._apply(batch, action)
        except (RedisError, OSError) as exc:
            raise CacheError(f"x2q {action} of version {version} failed: {exc}") from exc
        return done

    async def _apply(self, keys: list[bytes | str], action: str) -> int:
        if action == "unlink":
            return int(await self._redis.unlink(*keys))
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.expire(key, self.grace_s)
            return sum(bool(ok) for ok in await pipe.execute())

    async def publish(self, entries: Sequence[tuple[str, str, Sequence[str]]]) -> str:
        """:meth:`begin`, :meth:`write_many` and :meth:`switch` in one: a whole new index from
        ``entries`` (tests, the benchmark's loader). Returns the new version."""
        version = await self.begin()
        await self.write_many(entries, version)
        await self.switch(version)
        return version

    async def lookup(
        self, triggers: Sequence[tuple[str, str]], per_trigger: int = 10
    ) -> list[list[str]]:
        """The first ``per_trigger`` queries of each ``(kind, text)`` in the current version,
        in input order.

        One Lua script reads the pointer and the entries, so a lookup never mixes versions.
        A trigger the index does not have (or an index that does not exist) gives ``[]``.
        """
        members = [self._member(kind, text) for kind, text in triggers]
        if not members:
            return []
        try:
            values = cast(
                "list[bytes | None]",
                await self._lookup(keys=[self.pointer_key], args=[self.key_prefix, *members]),
            )
        except (RedisError, OSError) as exc:
            raise CacheError(f"x2q lookup of {len(members)} triggers failed: {exc}") from exc
        return [[] if raw is None else decode_queries(raw)[:per_trigger] for raw in values]
