"""The read path: a user's hints from history, u2q, x2q and popular, in ONE Redis round trip.

:class:`HintClient` is the Python client for services that read Redis directly, and the only
thing the HTTP API (:mod:`cache.api`) calls: one implementation of the read and of the
composition (:func:`cache.compose.compose`).

One request is one ``EVALSHA`` of a read-only Lua script that, inside Redis, reads the user's
newest u2q run (``LINDEX <prefix>u2q:<user> 0``), their newest recent triggers
(``ZREVRANGE <prefix>recent:<user>``), the current x2q version (``GET <prefix>x2q:current``)
and its entry for each trigger (``GET <prefix>x2q:<version>:<kind>:<text>``, keys built from
the triggers), their search history (``GET <prefix>history:<user>``, when
``AIGQ_HINTS_HISTORY`` > 0), and, when there is no history and no u2q run with queries, the
popular queries (``ZREVRANGE <prefix>popular``: the whole list when x2q gives nothing either,
else the rest of an x2q-only list, :mod:`cache.compose` rule 5). A script runs atomically,
so a request sees one version of the x2q index even while the offline builder switches to
the next. The x2q keys
depend on what the triggers are, so a pipeline would need two round trips; the script needs
one. It reads keys it was not given in KEYS, which a single Redis (or a primary with
replicas) allows and Redis Cluster does not. The command goes over one pipelined connection
(:mod:`cache.pipe`) shared by every concurrent request of the process.

A value of the wrong type, or an undecodable u2q run, x2q entry or history, is skipped and
reported as ``corrupt`` rather than failing the request; when nothing usable is left, the user
gets what a user with nothing stored gets, the popular queries (the script cannot decode JSON,
so in that rare case they come from a second command, within the same deadline). Redis errors,
refusals and the read deadline (``AIGQ_HINTS_TIMEOUT_MS``, connect included; no retries)
raise :class:`~cache.errors.CacheError` / :class:`~cache.errors.CacheTimeoutError` quickly.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from types import TracebackType
from typing import Any, Literal, NamedTuple, Self, cast

from aigq.events import USER_ID_RE, USER_ID_RULE
from aigq.logging import get_logger
from aigq.settings import RedisSettings
from cache.compose import Hint, TriggerHits, compose
from cache.errors import CacheError, CacheTimeoutError, CorruptEntryError, InvalidRequestError
from cache.history_store import decode_history
from cache.pipe import RedisPipe, ReplyError, bulk
from cache.recent import Trigger, parse_member
from cache.settings import HintSettings
from cache.u2q import U2QRun, decode_run
from cache.x2q import decode_queries

log = get_logger(__name__)


# KEYS: u2q list, recent-trigger zset, popular zset, history string.
# ARGV: x2q key prefix, triggers to look up, popular queries wanted, 1 to read the history.
# The x2q entries come from the version named by ``<x2q prefix>current`` (:mod:`cache.x2q`),
# read once; no pointer means no index, so every entry is nil.
# Returns {u2q head or nil, {member, score, ...}, {x2q entry or nil per trigger}, {popular},
# errors, 1 if popular was read, history or nil}; a key of the wrong type counts as an error
# and reads as empty. Popular is read only when the head is absent or has no queries and there
# is no history (it then fills or tops up the list): the script does not decode JSON, so a head
# or a history that turns out undecodable leaves it unread, and :meth:`HintClient.hints`
# reads it in a second command.
READ_LUA = """
local errors = 0
local head = redis.pcall('LINDEX', KEYS[1], 0)
if type(head) == 'table' then errors = errors + 1; head = false end
local triggers = {}
local n = tonumber(ARGV[2])
if n > 0 then
  triggers = redis.pcall('ZREVRANGE', KEYS[2], 0, n - 1, 'WITHSCORES')
  if triggers.err then errors = errors + 1; triggers = {} end
end
local entries = {}
local version = false
if #triggers > 0 then
  version = redis.pcall('GET', ARGV[1] .. 'current')
  if type(version) == 'table' then errors = errors + 1; version = false end
end
for i = 1, #triggers, 2 do
  local entry = false
  if version then
    entry = redis.pcall('GET', ARGV[1] .. version .. ':' .. triggers[i])
    if type(entry) == 'table' then errors = errors + 1; entry = false end
  end
  entries[#entries + 1] = entry
end
local history = false
if ARGV[4] == '1' then
  history = redis.pcall('GET', KEYS[4])
  if type(history) == 'table' then errors = errors + 1; history = false end
  if history == '[]' then history = false end
end
local popular = {}
local read_popular = 0
if not history and (not head or string.find(head, '"q":[]', 1, true)) then
  read_popular = 1
  popular = redis.pcall('ZREVRANGE', KEYS[3], 0, tonumber(ARGV[3]) - 1)
  if popular.err then errors = errors + 1; popular = {} end
end
return {head, triggers, entries, popular, errors, read_popular, history}
"""

Fallback = Literal["popular", "static"]


def check_user_id(user_id: str) -> str:
    """Return ``user_id`` if it is 1..256 of the allowed characters, else InvalidRequestError."""
    if not isinstance(user_id, str) or not USER_ID_RE.fullmatch(user_id):
        raise InvalidRequestError(f"user_id must be {USER_ID_RULE}")
    return user_id


class HintResult(NamedTuple):
    """What one read gave: the hints and what they were made of."""

    user_id: str
    k: int  # after capping
    hints: list[Hint]
    u2q: U2QRun | None  # the freshest run, if any
    triggers: tuple[Trigger, ...]  # newest first
    fallback: Fallback | None  # popular from Redis, the static list, or None
    corrupt: bool  # something stored was unreadable and was skipped
    read_at_ms: int  # wall time of the read (UTC ms)
    history: tuple[str, ...] = ()  # the user's history as read, strongest first

    @property
    def u2q_age_ms(self) -> int | None:
        """How old the u2q run is: read time minus its generation time (None without one)."""
        if self.u2q is None:
            return None
        return max(0, self.read_at_ms - self.u2q.generated_ts)


class HintClient:
    """Async context manager over one pipelined connection; :meth:`hints` is the read path."""

    def __init__(self, redis: RedisSettings, settings: HintSettings) -> None:
        self.settings = settings
        self._pipe = RedisPipe(redis, settings.timeout_s)
        prefix = redis.key_prefix
        self._u2q_prefix = f"{prefix}u2q:"
        self._recent_prefix = f"{prefix}recent:"
        self._popular_key = f"{prefix}popular"
        self._history_prefix = f"{prefix}history:"
        self._x2q_prefix = f"{prefix}x2q:"
        sha = hashlib.sha1(READ_LUA.encode()).hexdigest()
        # EVALSHA sha 4 <u2q key> <recent key> <popular key> <history key> <x2q prefix>
        # <triggers> <k> <read history>: all but the three user keys and k is the same for
        # every request.
        self._head = b"*11\r\n" + bulk("EVALSHA") + bulk(sha) + bulk(4)
        self._popular_bulk = bulk(self._popular_key)
        self._middle = bulk(self._x2q_prefix) + bulk(settings.triggers)
        self._tail = bulk(1 if settings.history else 0)
        self._timeout_s = settings.timeout_s

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._pipe.aclose()

    async def ping(self) -> None:
        """Raise CacheError unless Redis answers a PING within the read deadline."""
        try:
            reply = await self._pipe.call("PING")
        except TimeoutError as exc:
            raise CacheTimeoutError(f"Redis did not answer within {self._timeout_s}s") from exc
        except OSError as exc:  # ConnectionError included
            raise CacheError(f"Redis does not answer: {exc}") from exc
        if isinstance(reply, ReplyError):
            raise CacheError(f"Redis refused PING: {reply}")

    async def hints(self, user_id: str, k: int | None = None) -> HintResult:
        """The user's hints: at most ``k`` (default ``default_k``, capped at ``max_k``).

        Raises InvalidRequestError for a bad user id or k < 1, CacheTimeoutError past the
        deadline and CacheError when Redis fails. A user Redis knows nothing about gets the
        popular fallback; that is not an error.
        """
        check_user_id(user_id)
        wanted = self.settings.default_k if k is None else k
        if isinstance(wanted, bool) or not isinstance(wanted, int) or wanted < 1:
            raise InvalidRequestError(f"k must be an integer >= 1, got {k!r}")
        wanted = min(wanted, self.settings.max_k)
        started = time.monotonic()
        command = b"".join(
            (
                self._head,
                bulk(self._u2q_prefix + user_id),
                bulk(self._recent_prefix + user_id),
                self._popular_bulk,
                bulk(self._history_prefix + user_id),
                self._middle,
                bulk(wanted),
                self._tail,
            )
        )
        try:
            reply = await self._pipe.call_packed(command)
            if isinstance(reply, ReplyError) and str(reply).startswith("NOSCRIPT"):
                await self._pipe.call("SCRIPT", "LOAD", READ_LUA)  # a fresh or flushed server
                reply = await self._pipe.call_packed(command)
        except TimeoutError as exc:
            raise CacheTimeoutError(
                f"hint read of {user_id!r} took over {self._timeout_s}s"
            ) from exc
        except OSError as exc:  # ConnectionError included
            raise CacheError(f"hint read of {user_id!r} failed: {exc}") from exc
        if isinstance(reply, ReplyError):
            raise CacheError(f"hint read of {user_id!r} refused: {reply}")
        u2q, triggers, hits, corrupt = self._decode(user_id, reply)
        history, bad_history = self._history(user_id, reply[6])
        corrupt = corrupt or bad_history
        popular: list[bytes] = reply[3]
        hints = compose(u2q, hits, _texts(popular), wanted, history)
        if not hints and not reply[5]:
            # Something was stored but nothing usable came of it (a u2q head or x2q entries
            # that do not decode, which the script cannot tell): what a user with nothing
            # stored gets, the popular queries, read in a second command.
            popular, wrong_type = await self._popular(user_id, wanted, started)
            corrupt = corrupt or wrong_type
            hints = compose(u2q, hits, _texts(popular), wanted, history)
        fallback: Fallback | None = None
        if not hints and self.settings.popular_fallback:
            hints = compose(None, (), self.settings.popular_fallback, wanted)
            fallback = "static"
        elif hints and hints[0].source == "popular":
            fallback = "popular"
        return HintResult(
            user_id=user_id,
            k=wanted,
            hints=hints,
            u2q=u2q,
            triggers=tuple(triggers),
            fallback=fallback,
            corrupt=corrupt,
            read_at_ms=int(time.time() * 1000),
            history=tuple(history),
        )

    async def _popular(self, user_id: str, k: int, started: float) -> tuple[list[bytes], bool]:
        """The popular queries (and whether the key had the wrong type) in a command of their
        own, within what is left of the read's deadline."""
        left = self._timeout_s - (time.monotonic() - started)
        try:
            if left <= 0:
                raise TimeoutError
            async with asyncio.timeout(left):
                reply = await self._pipe.call("ZREVRANGE", self._popular_key, 0, k - 1)
        except TimeoutError as exc:
            raise CacheTimeoutError(
                f"hint read of {user_id!r} took over {self._timeout_s}s"
            ) from exc
        except OSError as exc:  # ConnectionError included
            raise CacheError(f"hint read of {user_id!r} failed: {exc}") from exc
        if isinstance(reply, ReplyError):  # not a sorted set: read as empty, as the script does
            return [], True
        return cast(list[bytes], reply), False

    def _history(self, user_id: str, raw: bytes | None) -> tuple[list[str], bool]:
        """The stored history's first ``AIGQ_HINTS_HISTORY`` queries, and whether it was
        unreadable (then it is skipped)."""
        if raw is None:
            return [], False
        try:
            return decode_history(raw)[: self.settings.history], False
        except CorruptEntryError as exc:
            log.warning("hints_corrupt_entry", user_id=user_id, error=str(exc))
            return [], True

    def _decode(
        self, user_id: str, reply: Any
    ) -> tuple[U2QRun | None, list[Trigger], list[TriggerHits], bool]:
        """The script's reply decoded: the u2q run, the triggers, their x2q queries, and
        whether anything was skipped as unreadable."""
        head, flat, entries, _, errors, _, _ = reply
        corrupt = bool(errors)
        u2q = None
        if head is not None:
            try:
                u2q = decode_run(head)
            except CorruptEntryError as exc:
                log.warning("hints_corrupt_entry", user_id=user_id, error=str(exc))
                corrupt = True
        triggers: list[Trigger] = []
        hits: list[TriggerHits] = []
        per_trigger = self.settings.per_trigger
        for i, entry in enumerate(entries):
            trigger = parse_member(flat[2 * i], flat[2 * i + 1])
            if trigger is None:
                corrupt = True
                continue
            triggers.append(trigger)
            if entry is not None:
                try:
                    hits.append(TriggerHits(trigger, decode_queries(entry)[:per_trigger]))
                except CorruptEntryError as exc:
                    log.warning("hints_corrupt_entry", user_id=user_id, error=str(exc))
                    corrupt = True
        return u2q, triggers, hits, corrupt


def _texts(popular: list[bytes]) -> list[str]:
    return [q.decode("utf-8", "replace") for q in popular]
