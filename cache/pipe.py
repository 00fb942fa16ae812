"""One pipelined Redis connection for the read path: many requests in flight, FIFO replies.

Why not redis-py here: measured on this machine, one ``EVALSHA`` of the read script costs the
calling process about 50 µs of CPU through ``redis.asyncio`` (connection pool, retry and
observability layers) and 13 µs through this class, which writes each command as soon as it
is asked for on one connection and matches replies to callers in order (Redis answers a
connection's commands in the order they came). The read path is one command per request, so
that difference is a fifth of a request's whole cost. Writes and everything else keep using
``redis.asyncio`` (:mod:`aigq.redis_clients`).

Scope, deliberately small: RESP2 requests and replies (parsed by ``hiredis``), ``redis://``,
``rediss://`` (TLS, with ``AIGQ_REDIS_SSL_CA_CERTS``) and ``unix://`` URLs, ``AUTH`` and
``SELECT`` on connect. Commands asked for in one event-loop iteration go out in one write
(under load, one system call carries several requests' commands, and Redis reads them in
one go). One deadline for every call (connect included), kept by a single timer rather
than one per call; a connection that misses it is dropped. A reply that comes after its
caller gave up is read and dropped, so the order stays right. A lost connection fails every
request in flight at once; the next call connects again. No retries.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

import hiredis

from aigq.settings import RedisSettings

ReplyError = hiredis.ReplyError


def bulk(arg: str | bytes | int) -> bytes:
    """One argument as a RESP2 bulk string."""
    data = arg if isinstance(arg, bytes) else str(arg).encode()
    return b"$%d\r\n%s\r\n" % (len(data), data)


def pack(*args: str | bytes | int) -> bytes:
    """A command in RESP2 (an array of bulk strings)."""
    return b"*%d\r\n" % len(args) + b"".join(map(bulk, args))


class _Protocol(asyncio.Protocol):
    def __init__(self, timeout_s: float) -> None:
        self.reader = hiredis.Reader()
        self.timeout_s = timeout_s
        # (caller's future, deadline on the loop clock), in the order the commands were sent
        self.waiting: deque[tuple[asyncio.Future[Any], float]] = deque()
        self.transport: asyncio.Transport | None = None
        self.lost: BaseException | None = None
        self.outgoing: list[bytes] = []
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            waiter = self.waiting.popleft()[0]
            if not waiter.done():  # its caller may have given up (deadline): drop the reply
                waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.lost is None:
            self.lost = exc or ConnectionError("Redis closed the connection")
        if self.timer is not None:
            self.timer.cancel()
        while self.waiting:
            waiter = self.waiting.popleft()[0]
            if not waiter.done():
                waiter.set_exception(ConnectionError(f"connection to Redis lost: {self.lost}"))

    def send(self, packed: bytes) -> asyncio.Future[Any]:
        """Queue a command; everything queued in one loop iteration goes out in one write."""
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        deadline = loop.time() + self.timeout_s
        self.waiting.append((waiter, deadline))
        if self.timer is None:
            self.timer = loop.call_at(deadline, self._expire)
        if not self.outgoing:
            loop.call_soon(self._flush)
        self.outgoing.append(packed)
        return waiter

    def _flush(self) -> None:
        data = b"".join(self.outgoing)
        self.outgoing.clear()
        if self.lost is None and self.transport is not None:
            self.transport.write(data)

    def _expire(self) -> None:
        """Fail the commands past their deadline; one timer for all, re-armed for the next.

        Commands go out in order with one timeout, so deadlines grow along the queue. A
        connection that missed a deadline is dropped: what is still in flight fails at once,
        and the next call connects again (a hung server or a half-open socket ends here).
        """
        self.timer = None
        loop = asyncio.get_running_loop()
        now, missed = loop.time(), False
        for waiter, deadline in self.waiting:
            if deadline > now:
                self.timer = loop.call_at(deadline, self._expire)
                break
            if not waiter.done():
                waiter.set_exception(TimeoutError(f"no reply from Redis in {self.timeout_s}s"))
                missed = True
        if missed and self.transport is not None:
            self.lost = TimeoutError("a reply missed its deadline")  # new calls: reconnect
            self.transport.abort()


class RedisPipe:
    """``await pipe.call("GET", key)``: the reply, a ReplyError instance for an error reply.

    Raises TimeoutError when connecting, or the reply, takes longer than ``timeout_s``, and
    ConnectionError/OSError when Redis cannot be reached or the connection drops. Use as
    ``async with`` or call :meth:`aclose`.
    """

    def __init__(self, settings: RedisSettings, timeout_s: float) -> None:
        self._timeout_s = timeout_s
        url = urlsplit(settings.url)
        query = parse_qs(url.query)
        self._path = url.path if url.scheme == "unix" else None
        self._host = url.hostname or "127.0.0.1"
        self._port = url.port or 6379
        db = "" if url.scheme == "unix" else url.path.strip("/")
        self._db = int(db or query.get("db", ["0"])[0])
        self._username = unquote(url.username) if url.username else None
        password = settings.password.get_secret_value() if settings.password else None
        self._password = password or (unquote(url.password) if url.password else None)
        self._ssl: ssl.SSLContext | None = None
        if settings.tls:
            ca = str(settings.ssl_ca_certs) if settings.ssl_ca_certs else None
            self._ssl = ssl.create_default_context(cafile=ca)
        self._proto: _Protocol | None = None
        self._connecting: asyncio.Lock | None = None

    async def __aenter__(self) -> RedisPipe:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def call(self, *args: str | bytes | int) -> Any:
        return await self.call_packed(pack(*args))

    async def call_packed(self, packed: bytes) -> Any:
        """:meth:`call` with a command already in RESP2 (see :func:`pack`)."""
        proto = self._proto
        if proto is None or proto.lost is not None:
            async with asyncio.timeout(self._timeout_s):
                proto = await self._connect()
        return await proto.send(packed)

    async def _connect(self) -> _Protocol:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:  # one connect at a time; the others then use it
            if self._proto is not None and self._proto.lost is None:
                return self._proto
            loop = asyncio.get_running_loop()
            if self._path is not None:
                transport, proto = await loop.create_unix_connection(self._protocol, self._path)
            else:
                transport, proto = await loop.create_connection(
                    self._protocol, self._host, self._port, ssl=self._ssl
                )
            try:
                if self._password:
                    who = (self._username,) if self._username else ()
                    await self._check(proto, "AUTH", *who, self._password)
                if self._db:
                    await self._check(proto, "SELECT", self._db)
            except BaseException:
                transport.close()
                raise
            self._proto = proto
            return proto

    def _protocol(self) -> _Protocol:
        return _Protocol(self._timeout_s)

    @staticmethod
    async def _check(proto: _Protocol, *args: str | int) -> None:
        reply = await proto.send(pack(*args))
        if isinstance(reply, ReplyError):
            raise ConnectionError(f"Redis refused {args[0]}: {reply}")

    async def aclose(self) -> None:
        proto, self._proto = self._proto, None
        if proto is not None and proto.transport is not None:
            proto.transport.close()
            await asyncio.sleep(0)  # let connection_lost run
