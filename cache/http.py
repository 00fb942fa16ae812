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

The endpoint's replies are built by this project (status, ``content-type``,
``content-length`` and fixed extra headers), so the per-header validation uvicorn does for
arbitrary ASGI apps is not repeated here. The access log, when enabled, is written as
uvicorn writes it.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, Protocol, cast

from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)
from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string

from cache.endpoint import Reply, Scope


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
        status, body, headers = await endpoint.respond(scope)  # never raises (a 500)
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
    """uvicorn's httptools protocol; requests the app's ``endpoint`` handles go direct."""

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        endpoint: DirectEndpoint | None = getattr(app, "endpoint", None)
        if endpoint is None or not endpoint.handles(cast(Scope, cycle.scope)):
            super()._start_asgi_task(cycle, app)
            return
        task = self.loop.create_task(_answer(cycle, endpoint))
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)
