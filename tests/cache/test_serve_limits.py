"""Slow and greedy clients against the real ``aigq serve`` process (issue 15, item 2).

Seen in a hostile run: 350 silent connections were held for 75 s, bounded by nothing but the
file-descriptor limit. Now a connection that does not send a whole request within
``AIGQ_SERVE_HEADER_TIMEOUT_S`` is closed (silent, or trickling bytes), an idle keep-alive
connection after ``AIGQ_SERVE_KEEP_ALIVE_S``, and past ``AIGQ_SERVE_LIMIT_CONCURRENCY`` the
server answers 503 at once. Raw sockets, so what is on the wire is what is checked; every
wait is a poll with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import selectors
import socket
import time
from collections.abc import Callable, Iterator

import pytest
from uvicorn import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from aigq.dev.probe import free_port, wait_until
from aigq.settings import RedisSettings
from cache.api import ReadAPI, uvicorn_options
from cache.http import LimitedHttpProtocol
from cache.settings import HintSettings, ServeSettings
from tests.cache.conftest import get, serve_process

TIMEOUT_S = 1.0  # the header timeout these servers run with
SLACK_S = 2.0  # how much later than due a close may come on a busy test machine


def _dead_redis() -> dict[str, str]:
    return {"AIGQ_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "AIGQ_HINTS_TIMEOUT_MS": "200"}


def _request(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: test\r\n{extra}\r\n".encode()


def _response(sock: socket.socket) -> tuple[int, dict[bytes, bytes], bytes]:
    """One HTTP/1.1 response off ``sock``: status, headers (lower-case names), body."""
    return _responses(sock, 1)[0]


def _responses(sock: socket.socket, n: int) -> list[tuple[int, dict[bytes, bytes], bytes]]:
    """The next ``n`` responses off ``sock``, however the server's writes are cut into
    segments (several pipelined responses may arrive in one ``recv``)."""
    buf = b""
    out: list[tuple[int, dict[bytes, bytes], bytes]] = []
    while len(out) < n:
        head, sep, rest = buf.partition(b"\r\n\r\n")
        if sep:
            status, *lines = head.split(b"\r\n")
            headers = dict(line.lower().split(b": ", 1) for line in lines)
            length = int(headers[b"content-length"])
            if len(rest) >= length:
                out.append((int(status.split()[1]), headers, rest[:length]))
                buf = rest[length:]
                continue
        chunk = sock.recv(65536)
        assert chunk, "connection closed before a response"
        buf += chunk
    return out


def _closed_by_server(sock: socket.socket, wait_s: float) -> bool:
    """Whether the server closes ``sock`` (EOF or reset) within ``wait_s``; what it sends
    before that is read and dropped. The socket's own timeout is restored after."""
    before = sock.gettimeout()
    sock.settimeout(wait_s)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    finally:
        sock.settimeout(before)
    return True


def _trickle(sock: socket.socket, data: bytes, every_s: float, limit_s: float) -> float:
    """Send ``data`` a byte at a time, one every ``every_s`` (paced by waiting for the
    server to hang up), until the server closes the connection; the seconds it lived."""
    started = time.monotonic()
    for i in range(len(data)):
        assert time.monotonic() - started < limit_s, "the server let the trickle go on"
        try:
            sock.sendall(data[i : i + 1])
        except (BrokenPipeError, ConnectionResetError):
            return time.monotonic() - started
        if _closed_by_server(sock, every_s):
            return time.monotonic() - started
    raise AssertionError(f"all {len(data)} bytes sent and the connection is still open")


@pytest.fixture
def connections() -> Iterator[Callable[[int], socket.socket]]:
    """``connect(port)``: a raw loopback connection, closed after the test."""
    with contextlib.ExitStack() as stack:

        def connect(port: int) -> socket.socket:
            return stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=5))

        yield connect


def test_uvicorn_still_has_what_the_protocol_extends() -> None:
    """cache/http.py relies on these names of uvicorn's protocol (pinned <1): a release that
    moves one fails here, by name, before the behaviour tests fail less clearly."""
    for name in (
        "on_message_begin",
        "on_headers_complete",
        "on_message_complete",
        "data_received",
        "connection_made",
        "connection_lost",
    ):
        assert callable(getattr(HttpToolsProtocol, name, None)), name
    assert "keep_alive" in set(inspect.signature(RequestResponseCycle).parameters)
    serve = ServeSettings(header_timeout_s=2.5, max_requests_per_connection=7)
    app = ReadAPI(HintSettings(), serve, RedisSettings())
    config = Config(app, **uvicorn_options(serve))
    config.load()
    loop = asyncio.new_event_loop()
    try:
        protocol = LimitedHttpProtocol(config, ServerState(), {}, _loop=loop)
    finally:
        loop.close()
    assert protocol.app is app  # the limits are read off the app
    assert (protocol._read_timeout_s, protocol._max_requests) == (2.5, 7)
    assert protocol.loop is loop
    for attribute in ("transport", "cycle", "tasks"):
        assert hasattr(protocol, attribute), attribute
    assert (config.timeout_keep_alive, config.limit_concurrency) == (5, 1000)


def test_serve_settings_for_slow_clients() -> None:
    defaults = ServeSettings()
    assert defaults.header_timeout_s == 5.0
    assert defaults.keep_alive_s == 5
    assert defaults.max_requests_per_connection == 0
    assert defaults.limit_concurrency == 1000
    with pytest.raises(ValueError, match="greater than 0"):
        ServeSettings(header_timeout_s=0)


@pytest.mark.integration
def test_silent_connections_are_closed_after_the_header_timeout() -> None:
    env = _dead_redis() | {"AIGQ_SERVE_HEADER_TIMEOUT_S": str(TIMEOUT_S)}
    with serve_process(env) as port, contextlib.ExitStack() as stack:
        selector = stack.enter_context(selectors.DefaultSelector())
        started = time.monotonic()
        for _ in range(350):
            sock = stack.enter_context(socket.create_connection(("127.0.0.1", port)))
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
        lived: list[float] = []
        deadline = started + TIMEOUT_S + SLACK_S
        while len(lived) < 350 and time.monotonic() < deadline:
            for key, _ in selector.select(0.1):
                with contextlib.suppress(ConnectionResetError):
                    assert key.fileobj.recv(1) == b""  # type: ignore[union-attr]
                selector.unregister(key.fileobj)
                lived.append(time.monotonic() - started)
        assert len(lived) == 350, f"{350 - len(lived)} silent connections still open"
        assert min(lived) >= TIMEOUT_S * 0.9
        assert get(port, "/healthz")[0] == 200  # the server itself is fine


@pytest.mark.integration
def test_slow_loris_connections_are_closed(
    connections: Callable[[int], socket.socket],
) -> None:
    env = _dead_redis() | {
        "AIGQ_SERVE_HEADER_TIMEOUT_S": str(TIMEOUT_S),
        "AIGQ_SERVE_KEEP_ALIVE_S": "30",  # the header timeout, not keep-alive, is tested
    }
    headers = _request("/healthz", "X-Padding: " + "a" * 200 + "\r\n")
    limit_s = TIMEOUT_S + SLACK_S
    with serve_process(env) as port:
        # header bytes trickled on a fresh connection
        assert _trickle(connections(port), headers, 0.1, limit_s) >= TIMEOUT_S * 0.9

        # the second request of a keep-alive connection, and stray line ends between requests
        for trickled in (headers, b"\r\n" * 100):
            sock = connections(port)
            sock.sendall(_request("/healthz"))
            assert _response(sock)[0] == 200
            assert _trickle(sock, trickled, 0.1, limit_s) >= TIMEOUT_S * 0.9

        # a body trickled after the headers (the hints endpoint answers without reading it)
        sock = connections(port)
        sock.sendall(_request("/v1/hints/u1", "Content-Length: 1000\r\n"))
        assert _response(sock)[0] == 503  # Redis is down: answered all the same
        assert _trickle(sock, b"x" * 1000, 0.1, limit_s) >= TIMEOUT_S * 0.5


@pytest.mark.integration
def test_a_keep_alive_client_still_works(
    redis_settings: RedisSettings, connections: Callable[[int], socket.socket]
) -> None:
    env = {
        "AIGQ_REDIS_URL": redis_settings.url,
        "AIGQ_SERVE_HEADER_TIMEOUT_S": str(TIMEOUT_S),
        "AIGQ_SERVE_KEEP_ALIVE_S": "2",
    }
    with serve_process(env) as port:
        sock = connections(port)
        started = time.monotonic()
        # requests 0.5 s apart on one connection, for longer than the header timeout
        while time.monotonic() - started < 3 * TIMEOUT_S:
            for path in ("/v1/hints/u1?k=3", "/healthz"):
                sock.sendall(_request(path))
                status, headers, _ = _response(sock)
                assert status == 200 and b"connection" not in headers
            assert not _closed_by_server(sock, 0.5)
        # pipelined requests in one write are all answered
        sock.sendall(_request("/healthz") * 5)
        assert [status for status, _, _ in _responses(sock, 5)] == [200] * 5
        # idle: closed after the keep-alive timeout
        idle = time.monotonic()
        assert _closed_by_server(sock, 2 + SLACK_S)
        assert time.monotonic() - idle >= 2 * 0.9


@pytest.mark.integration
def test_a_connection_is_closed_after_its_maximum_of_requests(
    connections: Callable[[int], socket.socket],
) -> None:
    env = _dead_redis() | {"AIGQ_SERVE_MAX_REQUESTS_PER_CONNECTION": "3"}
    with serve_process(env) as port:
        for path in ("/healthz", "/v1/hints/u1"):  # the ASGI path and the direct one
            sock = connections(port)
            closes = []
            for _ in range(3):
                sock.sendall(_request(path))
                _, headers, _ = _response(sock)
                closes.append(headers.get(b"connection"))
            assert closes == [None, None, b"close"]
            assert _closed_by_server(sock, 5)


@pytest.mark.integration
def test_past_the_concurrency_limit_the_answer_is_503_at_once(
    connections: Callable[[int], socket.socket],
) -> None:
    env = _dead_redis() | {
        "AIGQ_SERVE_LIMIT_CONCURRENCY": "20",
        "AIGQ_SERVE_HEADER_TIMEOUT_S": "60",  # the silent connections stay for the test
    }
    with serve_process(env) as port:
        held = [connections(port) for _ in range(20)]

        def refused() -> bool:
            return get(port, "/healthz")[0] == 503

        assert wait_until(refused, 10), "no 503 with the limit reached"
        answers = []
        for path in ("/healthz", "/v1/hints/u1") * 10:
            started = time.monotonic()
            answers.append(get(port, path))
            assert time.monotonic() - started < 1.0  # answered, not queued
        assert answers == [(503, b"Service Unavailable")] * 20
        for sock in held:
            sock.close()
        assert wait_until(lambda: get(port, "/healthz")[0] == 200, 10)
