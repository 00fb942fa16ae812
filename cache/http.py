"""uvicorn's httptools protocol with the slow-client limits uvicorn has no setting for.

Slow clients (issue 15: 350 silent connections were held for 75 s, bounded by nothing but
the file-descriptor limit). uvicorn times out only an *idle keep-alive* connection, after a
response: a fresh connection that sends nothing, or one that trickles header bytes, is held
for ever. :class:`LimitedHttpProtocol` (selected through uvicorn's documented ``http``
setting, which takes a protocol class) adds a read deadline (``AIGQ_SERVE_HEADER_TIMEOUT_S``):
armed when a connection is made and when bytes of a request arrive, cancelled when the
request (headers and any body) is complete; when it fires with no response being made, the
connection is closed. The deadline counts from the request's first byte, so trickling does
not extend it. ``AIGQ_SERVE_MAX_REQUESTS_PER_CONNECTION`` closes a connection after that
many requests; uvicorn's own ``timeout_keep_alive`` and ``limit_concurrency`` do the rest.
Everything else (parsing, keep-alive, pipelining, flow control, shutdown, the ASGI path to
the app) is uvicorn's.

What this relies on in uvicorn beyond its documented ``http`` setting (pinned ``<1``): the
transport callbacks (``connection_made``, ``connection_lost``, ``data_received``), the parser
callbacks ``on_message_begin``, ``on_headers_complete`` and ``on_message_complete``, and the
attributes ``app``, ``loop``, ``transport`` and ``cycle`` (``keep_alive``,
``response_complete``): public names of uvicorn's protocol class, no private method.
``tests/cache/test_serve_limits.py`` checks that uvicorn still has each of them, and the
behaviour through the real command.

Until issue 18 this class also answered the hints endpoint itself, overriding uvicorn's
private ``_start_asgi_task`` to write the reply in one write instead of uvicorn's two ASGI
messages. Measured side by side (``aigq bench serve --server direct --server uvicorn
--server granian``, docs/read-api.md) that gained 8 % over uvicorn's plain path (9,999
against 9,213 requests/s flat out; p99 at 2,000/s 1.05 against 1.21 ms): not enough to
depend on a private method, so it was removed. ``AIGQ_SERVE_SERVER=granian`` (1.08 times the
direct path) is the faster public option.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from cache.settings import ServeSettings

_DEFAULTS = ServeSettings.model_construct()  # the field defaults, without reading the env


class LimitedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol; a connection that does not send a whole request in time
    is closed, and one past its request cap is closed after its answer.

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
