"""Fixtures of the read-path tests: a hung Redis look-alike, the API served in a thread, and
``aigq serve`` as a process of its own."""

from __future__ import annotations

import asyncio
import http.client
import os
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import pytest_asyncio
import uvicorn

from aigq.dev.probe import free_port, wait_until
from cache.api import uvicorn_options
from cache.settings import ServeSettings

ROOT = Path(__file__).resolve().parents[2]


def get(port: int, path: str, timeout_s: float = 5.0) -> tuple[int, bytes]:
    """One ``GET`` on a connection of its own: (status, body)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _healthy(port: int) -> bool:
    try:
        return get(port, "/healthz", 1.0)[0] == 200
    except OSError:
        return False


@contextmanager
def serve_process(env: dict[str, str], stderr: IO[Any] | int | None = None) -> Iterator[int]:
    """``aigq serve`` as a process, ``env`` added to this one's, on a free loopback port;
    yield the port once ``/healthz`` answers, then SIGTERM it and check that it stopped
    cleanly."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "shell", "serve", "--port", str(port)],
        cwd=ROOT,
        env=os.environ | env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL if stderr is None else stderr,
    )
    try:
        assert wait_until(lambda: _healthy(port) or proc.poll() is not None, 30)
        assert proc.poll() is None, f"aigq serve exited with {proc.returncode}"
        yield port
        proc.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal it caught
        assert proc.wait(15) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


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
