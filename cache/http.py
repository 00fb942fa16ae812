"""uvicorn's httptools protocol with a direct path for the hot endpoint.

Profiled under load (py-spy, 1 worker, 32 connections), uvicorn's ASGI plumbing around
``GET /v1/hints/...`` cost about as much as the read itself: the ``run_asgi`` wrapper, two
``send`` messages, each header checked against two regular expressions, the head and the
body written with two ``transport.write`` calls (two ``send`` system calls, two TCP
segments). :class:`HintsHttpProtocol` is uvicorn's own ``HttpToolsProtocol`` (selected
through uvicorn's documented ``http`` setting, which takes a protocol class) with one
change: a request the app's ``endpoint`` :meth:`~DirectEndpoint.handles` gets a task that
awaits :meth:`~DirectEndpoint.respond` and writes the whole response (status line,
uvicorn's default headers, the endpoint's headers, body) in one write. Everything else
about the connection stays uvicorn's: parsing, keep-alive and its timeout, pipelined
requests (queued by uvicorn and started from ``on_response_complete``, so answers keep their
order), flow control, graceful shutdown (the task is in uvicorn's task set) and, for every
other request, the full ASGI path to FastAPI.

Slow clients (issue 15: 350 silent connections were held for 75 s, bounded by nothing but
the file-descriptor limit). uvicorn times out only an *idle keep-alive* connection, after a
response: a fresh connection that sends nothing, or one that trickles header bytes, is held
for ever. The protocol adds a read deadline (``AIGQ_SERVE_HEADER_TIMEOUT_S``): armed when a
connection is made and when bytes of a request arrive, cancelled when the request (headers
and any body) is complete; when it fires with no response being made, the connection is
closed. The deadline counts from the request's first byte, so trickling does not extend
it. ``AIGQ_SERVE_MAX_REQUESTS_PER_CONNECTION`` closes a connection after that many
requests; uvicorn's own ``timeout_keep_alive`` and ``limit_concurrency`` do the rest.

What this relies on in uvicorn beyond its documented ``http`` setting (pinned ``<1``):
``_start_asgi_task`` (where a request's task is started), the parser callbacks
``on_message_begin``, ``on_headers_complete`` and ``on_message_complete`` and the
attributes ``app``, ``loop``, ``transport`` and ``cycle`` (``keep_alive``,
``response_complete``). ``tests/cache/test_serve_limits.py`` checks that uvicorn still has
each of them, and the behaviour through the real command.

The endpoint's replies are built by this project (status, ``content-type``,
``content-length`` and fixed extra headers), so the per-header validation uvicorn does for
arbitrary ASGI apps is not repeated here. The access log, when enabled, is written as
uvicorn writes it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, Protocol, cast

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)
from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string
from uvicorn.server import ServerState

from cache.endpoint import Reply, Scope, error_reply
from cache.settings import ServeSettings

_DEFAULTS = ServeSettings.model_construct()  # the field defaults, without reading the env


class DirectEndpoint(Protocol):
    """What the protocol needs of the app's ``endpoint`` (``cache.endpoint.HintsEndpoint``)."""

    def handles(self, scope: Scope) -> bool: ...

    def respond(self, scope: Scope) -> Awaitable[Reply]: ...


def _noop() -> None:
    return None


async def _answer(cycle: RequestResponseCycle, endpoint: DirectEndpoint) -> None:
    """One request on the direct path: the reply, written once, then uvicorn's bookkeeping."""
    scope = cast(Scope, cycle.scope)  # a TypedDict to uvicorn, a mapping to the endpoint
    try:
        try:
            status, body, headers = await endpoint.respond(scope)  # does not raise (a 500)
        except Exception:  # noqa: BLE001 - if it ever does, the client still gets an answer
            status, body, headers = error_reply(500, "internal error")
        if cycle.flow.write_paused and not cycle.disconnected:
            await cycle.flow.drain()
        if cycle.disconnected:
            return
        cycle.response_started = True
        if cycle.access_log:
            cycle.access_logger.info(
                '%s - "%s %s HTTP/%s" %d',
                get_client_addr(cycle.scope),
                scope["method"],
                get_path_with_query_string(cycle.scope),
                scope["http_version"],
                status,
            )
        parts = [STATUS_LINE[status]]
        for name, value in cycle.default_headers:
            parts += (name, b": ", value, b"\r\n")
        for name, value in headers:
            parts += (name, b": ", value, b"\r\n")
        if not cycle.keep_alive:
            parts.append(b"connection: close\r\n")
        parts += (b"\r\n", body)
        cycle.transport.write(b"".join(parts))
        cycle.response_complete = True
        cycle.message_event.set()
        if not cycle.keep_alive:
            cycle.transport.close()
        cycle.on_response()  # the protocol starts the next pipelined request, or the keep-alive
    finally:
        cycle.on_response = _noop  # as uvicorn's run_asgi leaves it


class HintsHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol; requests the app's ``endpoint`` handles go direct, and
    a connection that does not send a whole request in time is closed.

    The limits are the app's ``serve`` settings (:class:`cache.api.ReadAPI` has them; the
    defaults otherwise): uvicorn builds the protocol from a class, in each worker process,
    so they cannot be passed in.
    """

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        serve: ServeSettings = getattr(self.app, "serve", _DEFAULTS)
        self._read_timeout_s = serve.header_timeout_s
        self._max_requests = serve.max_requests_per_connection
        self._requests = 0
        self._read_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()  # a connection must send its first request in time

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._read_timer is None:  # bytes of a request (or stray ones): the clock starts
            self._arm()
        super().data_received(data)

    def on_message_begin(self) -> None:
        if self._read_timer is None:  # a pipelined request that came with the last one
            self._arm()
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._requests += 1
        if self._max_requests and self._requests >= self._max_requests:
            self.cycle.keep_alive = False  # answered with "connection: close", then closed

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def _arm(self) -> None:
        self._read_timer = self.loop.call_later(self._read_timeout_s, self._read_timed_out)

    def _disarm(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _read_timed_out(self) -> None:
        self._read_timer = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # A response is being made (the next request waits, its reading paused): the
            # server is the slow one. Look again after another period.
            self._arm()
            return
        self.transport.close()

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        endpoint: DirectEndpoint | None = getattr(app, "endpoint", None)
        if endpoint is None or not endpoint.handles(cast(Scope, cycle.scope)):
            super()._start_asgi_task(cycle, app)
            return
        task = self.loop.create_task(_answer(cycle, endpoint))
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)
