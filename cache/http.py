"""uvicorn's httptools protocol with one socket write per response instead of two.

uvicorn writes a response's head when the app sends ``http.response.start`` and its body
when it sends ``http.response.body``; uvloop puts each ``transport.write`` on the socket at
once, so a small response costs two ``send`` system calls and reaches the client as two TCP
segments. Profiled under load, those writes were over a quarter of the API process's time.
This protocol hands uvicorn a transport that collects what is written during one event-loop
iteration and writes it once at the end of it (``loop.call_soon``), and closing flushes
first. Nothing else changes: it is uvicorn's own ``HttpToolsProtocol``, selected through
uvicorn's documented ``http`` setting, which takes a protocol class.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class CorkedTransport:
    """A transport proxy whose writes within one loop iteration leave as one write."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._loop = asyncio.get_running_loop()
        self._pending: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(bytes(data))

    def writelines(self, chunks: Iterable[bytes | bytearray | memoryview]) -> None:
        for chunk in chunks:
            self.write(chunk)

    def flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:  # everything else is the real transport's
        return getattr(self._transport, name)


class CorkedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol over a :class:`CorkedTransport`."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(cast(asyncio.Transport, CorkedTransport(transport)))
