"""The per-user u2q cache: the latest ``keep_runs`` hint-query runs of each user, newest first.

The paper's nearline path writes every generated list to "a per-user key-value cache that keeps
the latest M runs"; the online service reads a user's runs back in one command. Writers race
(replays, retries, several workers after a rebalance), so a write is a compare-and-set on the
run's ``(watermark_ts, session_version)`` pair, compared lexicographically: it lands only if
that pair is greater than the newest stored run's. ``watermark_ts`` is the newest event time
the session state had applied when the trigger fired, ``session_version`` the count of events
it had applied. The watermark comes first because a count alone does not survive a rebuild: a
session state rebuilt under a new app id (or by a backfill) counts from lower, and a compare
on versions alone would refuse every write of it as stale until the key expired. Within one
watermark (several events of one millisecond, a replay) the version decides.

Layout: ONE Redis list per user at ``<prefix>u2q:<user_id>``, newest run first, each element an
orjson object whose first members are the session version and the watermark::

    {"v":42,"w":1700000000000,"q":["query 1","query 2"],"m":"model-7","e":1700000000000,
     "g":1700000000123,"r":"drift"}

Why a list of Python-encoded elements and not one JSON document rewritten by Lua with cjson:
the script never parses JSON. It reads the head element (``LINDEX 0``), pulls the digits after
``{"v":`` and ``,"w":`` and compares them with the new pair as decimal strings (length, then
bytes), so numbers of any size compare exactly (Lua's own numbers are doubles, exact only to
2**53); then ``LPUSH``, ``LTRIM`` to ``keep_runs`` and ``EXPIRE``, atomically. cjson would turn
an empty ``q`` array into ``{}`` and large integers into floats; here every byte of a run is
written and read by orjson on the Python side. A read is still one command (``LRANGE``, or
``LINDEX 0`` for the latest), and the key expires as a whole ``ttl_s`` after the last accepted
write (a stale write changes nothing, TTL included).

``"v"`` stays first so that elements written before watermarks existed (``{"v":42,"q":...``)
and this format are read alike: an element without ``"w"`` (an old one, or a run without a
watermark) counts as watermark 0, so any run with a watermark replaces it, and
:func:`decode_run` returns ``watermark_ts=None`` for it. It also keeps a generator of the
previous release, during a rolling upgrade, reading versions from the new elements instead of
replacing them as unreadable.

A head the script cannot read (a value of another type, or an element without the version
prefix) is replaced by the new run rather than blocking that user's writes until the key
expires; the write still reports ``written`` and a warning is logged. A stale or replayed write
(same pair) is a no-op, which makes retrying a whole micro-batch after an error safe.

Errors: Redis down, timed out, or unable to take writes at all (out of memory, read-only, busy,
loading) is a :class:`~cache.errors.CacheError` (a ServiceError: wait and retry); Redis
refusing *one* write (the script failing on that key, no permission on that key) is a
:class:`WriteRefused`: the same write would be refused again.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import (
    ClusterDownError,
    NoPermissionError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    TryAgainError,
)

from aigq.errors import AigqError
from aigq.logging import get_logger
from cache.errors import CacheError, CorruptEntryError

log = get_logger(__name__)

_MAX_INT = 2**63 - 1  # what orjson (and every JSON reader downstream) round-trips exactly

# KEYS[1] the user's list; ARGV: new watermark and new session version (decimals, no leading
# zeros), encoded run, keep_runs, ttl_s.
# Returns 0 stale, 1 written, 2 written over a head it could not read (now replaced).
_WRITE_LUA = """
local function less(a, b)
  return #a < #b or (#a == #b and a < b)
end
local head = redis.pcall('LINDEX', KEYS[1], 0)
local healed = 0
if type(head) == 'table' and head.err then
  redis.call('DEL', KEYS[1])
  healed = 1
elseif head then
  local version, watermark = string.match(head, '^{"v":(%d+),"w":(%d+),')
  if version == nil then
    version, watermark = string.match(head, '^{"v":(%d+),'), '0'
  end
  if version == nil then
    redis.call('DEL', KEYS[1])
    healed = 1
  elseif not (less(watermark, ARGV[1]) or (watermark == ARGV[1] and less(version, ARGV[2]))) then
    return 0
  end
end
redis.call('LPUSH', KEYS[1], ARGV[3])
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[4]) - 1)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[5]))
return 1 + healed
"""

# Replies that say Redis cannot take writes now, whatever the key: an outage, not a refusal.
_OUTAGE_REPLIES = (OutOfMemoryError, ReadOnlyError, ClusterDownError, TryAgainError, NoScriptError)
_OUTAGE_CODES = frozenset({"BUSY", "LOADING", "MASTERDOWN", "MISCONF", "NOREPLICAS", "NOAUTH"})


class WriteResult(enum.StrEnum):
    """What :meth:`U2QStore.write` did."""

    WRITTEN = "written"
    STALE = "stale"  # an equal or newer (watermark, version) is already stored: nothing changed


class WriteRefused(AigqError):
    """Redis refused this one write (the script failed on the key, no permission on the key):
    the same write will be refused again, so retrying it cannot help. Not a CacheError, which
    says the cache as a whole is down or unable to take writes."""


def _check_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_INT:
        raise ValueError(f"{name} must be an int in 0..2**63-1, got {value!r}")


@dataclass(frozen=True, slots=True)
class U2QRun:
    """One generated hint-query list of one user."""

    queries: tuple[str, ...]  # ordered, most likely first
    model_version: str
    session_version: int  # the user's session version the run was generated for
    event_ts: int  # event time (UTC ms) of the behaviour that triggered it
    generated_ts: int  # wall time (UTC ms) the list was generated
    reason: str = ""  # trigger reason (cold_start, drift, ...)
    # The newest event time (UTC ms) the session state had applied; None (an element written
    # before watermarks, or a writer without one) orders as 0.
    watermark_ts: int | None = None

    def __post_init__(self) -> None:
        # Runs on every read of the API too (decode_run), so the checks are the cheap kind.
        queries = self.queries
        if isinstance(queries, str):
            raise ValueError(f"queries must be a sequence of str, got {queries!r}")
        if type(queries) is not tuple:
            queries = tuple(queries)
            object.__setattr__(self, "queries", queries)
        try:
            "".join(queries)  # a TypeError unless every element is a str; fast in C
        except TypeError:
            raise ValueError(f"queries must be a sequence of str, got {queries!r}") from None
        if not isinstance(self.model_version, str) or not isinstance(self.reason, str):
            raise ValueError("model_version and reason must be str")
        _check_int("session_version", self.session_version)
        _check_int("event_ts", self.event_ts)
        _check_int("generated_ts", self.generated_ts)
        if self.watermark_ts is not None:
            _check_int("watermark_ts", self.watermark_ts)


def encode_run(run: U2QRun) -> bytes:
    """The stored form of a run; ``"v"`` then ``"w"`` must stay first, the write script
    matches on them (``"w"`` is left out when the run has no watermark)."""
    obj: dict[str, Any] = {"v": run.session_version}
    if run.watermark_ts is not None:
        obj["w"] = run.watermark_ts
    obj.update(
        q=run.queries,
        m=run.model_version,
        e=run.event_ts,
        g=run.generated_ts,
        r=run.reason,
    )
    return orjson.dumps(obj)


def decode_run(raw: bytes | str) -> U2QRun:
    """A stored element (either format) back into a run; raise CorruptEntryError if it is not
    one."""
    try:
        obj = orjson.loads(raw)
        if not isinstance(obj, dict) or not isinstance(obj.get("q"), list):
            raise ValueError("not a u2q run object")
        return U2QRun(
            queries=tuple(obj["q"]),
            model_version=obj["m"],
            session_version=obj["v"],
            event_ts=obj["e"],
            generated_ts=obj["g"],
            reason=obj.get("r", ""),
            watermark_ts=obj.get("w"),
        )
    except (orjson.JSONDecodeError, KeyError, ValueError) as exc:
        raise CorruptEntryError(f"undecodable u2q run {raw[:200]!r}: {exc}") from exc


def is_outage(reply: ResponseError) -> bool:
    """Whether an error reply says Redis cannot take writes now (whatever the key) rather than
    that it refuses this one write. A NOPERM about keys is about this key; one about the
    command (no right to run EVALSHA at all) refuses every write: an outage until fixed."""
    if isinstance(reply, _OUTAGE_REPLIES):
        return True
    if isinstance(reply, NoPermissionError):
        return "key" not in str(reply)
    code = getattr(reply, "status_code", None) or str(reply).split(" ", 1)[0]
    return code in _OUTAGE_CODES


class U2QStore:
    """Compare-and-set writes and one-command reads of the per-user u2q lists."""

    def __init__(
        self, redis: Redis, prefix: str = "aigq:", keep_runs: int = 3, ttl_s: int = 7 * 86_400
    ) -> None:
        if keep_runs < 1:
            raise ValueError(f"keep_runs must be >= 1, got {keep_runs}")
        if ttl_s < 1:
            raise ValueError(f"ttl_s must be >= 1, got {ttl_s}")
        self._redis = redis
        self._prefix = prefix
        self._keep_runs = keep_runs
        self._ttl_s = ttl_s
        self._script = redis.register_script(_WRITE_LUA)

    def key(self, user_id: str) -> str:
        if not user_id:
            raise ValueError("user_id must be non-empty")
        return f"{self._prefix}u2q:{user_id}"

    def _args(self, run: U2QRun) -> list[Any]:
        watermark = 0 if run.watermark_ts is None else run.watermark_ts
        return [
            str(watermark),
            str(run.session_version),
            encode_run(run),
            self._keep_runs,
            self._ttl_s,
        ]

    async def write(self, user_id: str, run: U2QRun) -> WriteResult:
        """Store ``run`` unless the newest stored run has an equal or greater
        ``(watermark_ts, session_version)``. Raise :class:`WriteRefused` if Redis refuses this
        write, CacheError if Redis is down or cannot take writes."""
        key = self.key(user_id)
        try:
            reply = await self._script(keys=[key], args=self._args(run))
        except ResponseError as exc:
            reply = exc
        except (RedisError, OSError) as exc:  # OSError covers TimeoutError and ConnectionError
            raise CacheError(f"u2q write of {key!r} failed: {exc}") from exc
        result = self._result(key, reply)
        if isinstance(result, WriteRefused):
            raise result
        return result

    async def write_many(
        self, items: Sequence[tuple[str, U2QRun]]
    ) -> list[WriteResult | WriteRefused]:
        """:meth:`write` for a micro-batch in one pipeline round trip; results in input order.

        Two runs of one user in a batch end like two writes: the greater pair is stored. A
        write Redis refuses comes back as a :class:`WriteRefused` in its place, the others
        are kept. If Redis is down or cannot take writes, CacheError is raised (some writes
        may have landed); retrying the whole batch is safe because an applied write replays
        as ``stale``.
        """
        batch = [(self.key(user_id), self._args(run)) for user_id, run in items]
        if not batch:
            return []
        try:
            replies = await self._pipeline(batch)
            missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
            if missing:  # a fresh or flushed server: load once, redo only what did not run
                await self._redis.script_load(_WRITE_LUA)
                redone = await self._pipeline([batch[i] for i in missing])
                for i, reply in zip(missing, redone, strict=True):
                    replies[i] = reply
        except (RedisError, OSError) as exc:
            raise CacheError(f"u2q write of {len(batch)} runs failed: {exc}") from exc
        return [self._result(key, reply) for (key, _), reply in zip(batch, replies, strict=True)]

    async def _pipeline(self, batch: Sequence[tuple[str, list[Any]]]) -> list[Any]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for key, args in batch:
                pipe.evalsha(self._script.sha, 1, key, *args)
            return list(await pipe.execute(raise_on_error=False))

    def _result(self, key: str, reply: object) -> WriteResult | WriteRefused:
        if isinstance(reply, ResponseError) and not is_outage(reply):
            code = getattr(reply, "status_code", None)  # redis-py cuts it from the message
            said = f"{code} {reply}" if code and not str(reply).startswith(code) else str(reply)
            refused = WriteRefused(f"Redis refused the u2q write of {key!r}: {said}")
            refused.__cause__ = reply
            return refused
        if isinstance(reply, BaseException):
            raise CacheError(f"u2q write of {key!r} failed: {reply}") from reply
        if reply == 0:
            return WriteResult.STALE
        if reply == 2:
            log.warning("u2q_replaced_unreadable_entry", key=key)
        elif reply != 1:
            raise CacheError(f"u2q write of {key!r}: unexpected script reply {reply!r}")
        return WriteResult.WRITTEN

    async def heads(self, user_ids: Sequence[str]) -> dict[str, tuple[int, int]]:
        """Each user's newest stored run as the write compares it, ``(watermark_ts,
        session_version)`` (watermark 0 without one), in one round trip. A user without a
        stored run, or with one the write script would replace (another type, undecodable),
        is left out: a write for them lands whatever its pair."""
        if not user_ids:
            return {}
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for user_id in user_ids:
                    pipe.lindex(self.key(user_id), 0)
                replies = await pipe.execute(raise_on_error=False)
        except (RedisError, OSError) as exc:
            raise CacheError(f"u2q read of {len(user_ids)} heads failed: {exc}") from exc
        out: dict[str, tuple[int, int]] = {}
        for user_id, reply in zip(user_ids, replies, strict=True):
            if isinstance(reply, ResponseError) and not is_outage(reply):
                continue  # a key of another type: the write replaces it
            if isinstance(reply, BaseException):
                raise CacheError(f"u2q read of {user_id!r} failed: {reply}") from reply
            if reply is None:
                continue
            try:
                run = decode_run(reply)
            except CorruptEntryError:
                continue
            out[user_id] = (run.watermark_ts or 0, run.session_version)
        return out

    async def runs(self, user_id: str) -> list[U2QRun]:
        """The stored runs, newest first; ``[]`` when the user has none."""
        key = self.key(user_id)
        try:
            raw = await self._redis.lrange(key, 0, self._keep_runs - 1)
        except (RedisError, OSError) as exc:
            raise CacheError(f"u2q read of {key!r} failed: {exc}") from exc
        return [decode_run(element) for element in raw]

    async def latest(self, user_id: str) -> U2QRun | None:
        """The newest stored run, or None."""
        key = self.key(user_id)
        try:
            raw = await self._redis.lindex(key, 0)
        except (RedisError, OSError) as exc:
            raise CacheError(f"u2q read of {key!r} failed: {exc}") from exc
        return None if raw is None else decode_run(raw)
