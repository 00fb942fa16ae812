"""Fixtures of the read-path tests: a hung Redis look-alike, and the API served in a thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest_asyncio
import uvicorn

from aigq.dev.probe import free_port, wait_until
from cache.api import uvicorn_options
from cache.settings import ServeSettings


def serve_in_thread(app: Any) -> Iterator[int]:
    """Run ``app`` as ``aigq serve`` runs it (same options) on a free loopback port; yield
    the port, stop the server after."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, **uvicorn_options(ServeSettings(port=port))))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        assert wait_until(lambda: server.started, 10), "uvicorn did not start"
        yield port
    finally:
        server.should_exit = True
        thread.join(10)


@pytest_asyncio.fixture
async def hung_port() -> AsyncIterator[int]:
    """A loopback port that accepts connections and reads, but never answers (a hung Redis)."""
    held: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        while await reader.read(65536):
            pass

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()
