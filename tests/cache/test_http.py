"""The read API on the wire, through a real uvicorn (``aigq serve``'s options) and Redis.

Raw sockets, so what is on the wire is what is checked: pipelined requests to the hints
endpoint and to FastAPI's routes are answered in order, ``Connection: close`` is honoured,
uvicorn's default headers are kept, and a client that hangs up early harms nothing.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import Iterator, MutableMapping
from typing import Any

import orjson
import pytest

from aigq.redis_clients import open_redis
from aigq.settings import RedisSettings
from cache.api import ReadAPI
from cache.bench_data import BenchData, delete, load
from cache.settings import HintSettings, ServeSettings
from tests.cache.conftest import serve_in_thread

pytestmark = pytest.mark.integration


class CountingAPI(ReadAPI):
    """The real app, counting the requests that reach it through ASGI, by path."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.asgi_paths: list[str] = []

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.asgi_paths.append(scope["path"])
        await super().__call__(scope, receive, send)


@pytest.fixture(scope="module")
def data(redis_settings: RedisSettings) -> Iterator[BenchData]:
    bench = BenchData(f"test:{uuid.uuid4().hex}:", 1_000)

    async def run(job: Any) -> Any:
        async with open_redis(redis_settings) as client:
            return await job(client)

    asyncio.run(run(lambda c: load(c, bench, x2q_triggers=200)))
    yield bench
    asyncio.run(run(lambda c: delete(c, bench.prefix)))


@pytest.fixture(scope="module")
def server(data: BenchData, redis_settings: RedisSettings) -> Iterator[tuple[CountingAPI, int]]:
    keys = redis_settings.model_copy(update={"key_prefix": data.prefix})
    app = CountingAPI(HintSettings(), ServeSettings(), keys)
    for port in serve_in_thread(app):
        yield app, port


Response = tuple[bytes, dict[bytes, bytes], bytes]


def _read_responses(sock: socket.socket, count: int) -> list[Response]:
    """``count`` HTTP/1.1 responses (status line, headers, body) read off ``sock``."""
    buf, out = b"", list[Response]()
    while len(out) < count:
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            status, *lines = buf[:end].split(b"\r\n")
            headers = dict(line.lower().split(b": ", 1) for line in lines)
            total = end + 4 + int(headers[b"content-length"])
            if len(buf) >= total:
                out.append((status, headers, buf[end + 4 : total]))
                buf = buf[total:]
                continue
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {len(out)} of {count} responses"
        buf += chunk
    return out


def _get(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: test\r\n{extra}\r\n".encode()


def test_pipelined_answers_keep_their_order(
    server: tuple[CountingAPI, int], data: BenchData
) -> None:
    app, port = server
    users = [data.user(i) for i in (3, 5, 8)]
    before = len(app.asgi_paths)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        # one write: hints, health (the ASGI path), hints, an invalid k, hints
        sock.sendall(
            _get(f"/v1/hints/{users[0]}?k=3")
            + _get("/healthz")
            + _get(f"/v1/hints/{users[1]}?k=4")
            + _get(f"/v1/hints/{users[2]}?k=zero")
            + _get(f"/v1/hints/{users[2]}?k=5")
        )
        replies = _read_responses(sock, 5)
    statuses = [status for status, _, _ in replies]
    assert statuses == [b"HTTP/1.1 200 OK"] * 3 + [b"HTTP/1.1 422 Unprocessable Entity"] + [
        b"HTTP/1.1 200 OK"
    ]
    bodies = [orjson.loads(body) for _, _, body in replies]
    assert [bodies[0]["user_id"], bodies[2]["user_id"], bodies[4]["user_id"]] == users
    assert [len(bodies[i]["hints"]) for i in (0, 2, 4)] == [3, 4, 5]
    assert bodies[1] == {"status": "ok"}
    assert bodies[3]["error"] == "invalid request"
    for _, headers, _ in replies:
        assert headers[b"content-type"] == b"application/json"
        assert b"date" in headers  # uvicorn's default headers are kept
        assert b"connection" not in headers  # keep-alive
    assert app.asgi_paths[before:] == [
        f"/v1/hints/{users[0]}", "/healthz", f"/v1/hints/{users[1]}",
        f"/v1/hints/{users[2]}", f"/v1/hints/{users[2]}",
    ]  # fmt: skip


def test_connection_close_is_honoured(server: tuple[CountingAPI, int], data: BenchData) -> None:
    _, port = server
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(_get(f"/v1/hints/{data.user(1)}", "Connection: close\r\n"))
        [(status, headers, body)] = _read_responses(sock, 1)
        assert status == b"HTTP/1.1 200 OK"
        assert headers[b"connection"] == b"close"
        assert orjson.loads(body)["user_id"] == data.user(1)
        assert sock.recv(1) == b""  # the server closed the connection


def test_a_client_that_leaves_early_does_not_stop_the_server(
    server: tuple[CountingAPI, int], data: BenchData
) -> None:
    _, port = server
    for i in range(20):  # ask and hang up at once, before the answer
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(_get(f"/v1/hints/{data.user(i)}"))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(_get(f"/v1/hints/{data.user(0)}"))
        [(status, _, body)] = _read_responses(sock, 1)
    assert status == b"HTTP/1.1 200 OK"
    assert orjson.loads(body)["user_id"] == data.user(0)
