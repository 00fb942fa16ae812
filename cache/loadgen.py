"""Load generators for ``aigq bench serve``, each run in a process of its own.

``python -m cache.loadgen '<json spec>'`` runs one job and prints one JSON line. Jobs:

- ``http_rate``: open loop at a fixed request rate over ``connections`` keep-alive HTTP/1.1
  connections (raw asyncio sockets on uvloop: httpx costs more CPU per request than the API
  it would measure). Connection ``j`` sends requests ``j, j+C, j+2C, ...`` at their scheduled
  times. A request's latency counts from its scheduled time when its connection was still
  busy then (so a stall is not hidden: no coordinated omission), else from when it was sent
  (so timer granularity is not billed to the server).
- ``http_max``: closed loop, each connection sends its next request as soon as the last
  answered: the throughput ceiling of whatever it is pointed at.
- ``redis_get``: the same closed loop of plain ``GET``s through ``redis.asyncio`` with
  ``connections`` concurrent tasks sharing one pool: the raw Redis figure the API is compared
  with.
- ``canned``: a trivial HTTP server answering every request with the same body, to measure
  the load generator's own ceiling.

Requests cycle through ``paths`` built from ``users`` ids ``<user_prefix><i:06d>``, drawn with a
seeded RNG; every ``unknown_every``-th one asks for a user with no entries (0: none).
Results count only requests scheduled after ``warmup_s``.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any, cast

import uvloop

from aigq.redis_clients import open_redis
from aigq.settings import RedisSettings
from aigq.stats import percentile


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0
    first_error: str = ""

    def summary(self, seconds: float, cpu_s: float) -> dict[str, Any]:
        lat = sorted(self.latencies)
        done = len(lat)

        def pct(q: float) -> float:
            return percentile(lat, q, presorted=True) * 1000

        return {
            "requests": done,
            "seconds": seconds,
            "rate": done / seconds if seconds > 0 else 0.0,
            "p50_ms": pct(0.50),
            "p90_ms": pct(0.90),
            "p99_ms": pct(0.99),
            "p999_ms": pct(0.999),
            "max_ms": lat[-1] * 1000 if done else float("nan"),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "errors": self.errors,
            "first_error": self.first_error,
            "cpu_s": cpu_s,
        }


class _Http(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection with one request in flight."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.waiter: asyncio.Future[int] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.waiter is None:
            return
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buf[:end]).lower()
        at = head.find(b"\r\ncontent-length:")
        length = 0
        if at >= 0:
            stop = head.find(b"\r\n", at + 2)
            length = int(head[at + 17 : stop if stop >= 0 else len(head)])
        total = end + 4 + length
        if len(self.buf) < total:
            return
        status = int(self.buf[9:12])
        del self.buf[:total]
        waiter, self.waiter = self.waiter, None
        if not waiter.done():
            waiter.set_result(status)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"connection lost: {exc}"))

    async def request(self, data: bytes) -> int:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return await self.waiter


def build_requests(spec: dict[str, Any], count: int = 20_000) -> list[bytes]:
    rng = random.Random(spec.get("seed", 0))
    users, unknown_every = int(spec["users"]), int(spec.get("unknown_every", 0))
    prefix, k = spec.get("user_prefix", "u"), int(spec.get("k", 10))
    extra = "".join(f"{name}: {value}\r\n" for name, value in spec.get("headers", {}).items())
    out = []
    for n in range(count):
        if unknown_every and n % unknown_every == 0:
            user = f"nobody{n:06d}"
        else:
            user = f"{prefix}{rng.randrange(users):06d}"
        out.append(f"GET /v1/hints/{user}?k={k} HTTP/1.1\r\nHost: bench\r\n{extra}\r\n".encode())
    return out


async def _connect(spec: dict[str, Any]) -> list[_Http]:
    loop = asyncio.get_running_loop()
    conns = []
    for _ in range(int(spec["connections"])):
        _, proto = await loop.create_connection(_Http, spec["host"], int(spec["port"]))
        conns.append(proto)
    return conns


async def http_rate(spec: dict[str, Any]) -> dict[str, Any]:
    reqs = build_requests(spec)
    conns = await _connect(spec)
    rate, warmup = float(spec["rate"]), float(spec["warmup_s"])
    width = len(conns)
    tally = Tally()
    t0 = time.perf_counter() + 0.05
    measure_from, end = t0 + warmup, t0 + warmup + float(spec["duration_s"])

    async def worker(j: int, conn: _Http) -> None:
        n, prev_done = j, 0.0
        while True:
            due = t0 + n / rate
            if due >= end:
                return
            now = time.perf_counter()
            if now < due:
                await asyncio.sleep(due - now)
            sent = time.perf_counter()
            try:
                status = await conn.request(reqs[n % len(reqs)])
            except ConnectionError as exc:
                tally.errors += 1
                tally.first_error = tally.first_error or str(exc)
                return
            prev_busy, prev_done = prev_done > due, time.perf_counter()
            if due >= measure_from:
                tally.latencies.append(prev_done - (due if prev_busy else sent))
                tally.statuses[status] = tally.statuses.get(status, 0) + 1
            n += width

    cpu0 = time.process_time()
    await asyncio.gather(*(worker(j, c) for j, c in enumerate(conns)))
    seconds = time.perf_counter() - measure_from
    return tally.summary(seconds, time.process_time() - cpu0) | {"target_rate": rate}


async def _closed_loop(spec: dict[str, Any], call: Any) -> dict[str, Any]:
    """``connections`` tasks calling ``call(task, n)`` back to back until the end."""
    warmup, duration = float(spec["warmup_s"]), float(spec["duration_s"])
    tally = Tally()
    start = time.perf_counter()
    measure_from, end = start + warmup, start + warmup + duration

    async def worker(j: int) -> None:
        n = j
        while (sent := time.perf_counter()) < end:
            try:
                status = await call(j, n)
            except (ConnectionError, OSError) as exc:
                tally.errors += 1
                tally.first_error = tally.first_error or repr(exc)
                return
            if sent >= measure_from:
                tally.latencies.append(time.perf_counter() - sent)
                tally.statuses[status] = tally.statuses.get(status, 0) + 1
            n += int(spec["connections"])

    cpu0 = time.process_time()
    await asyncio.gather(*(worker(j) for j in range(int(spec["connections"]))))
    # The last requests started before `end` finish after it: divide by the time they took.
    seconds = max(time.perf_counter(), end) - measure_from
    return tally.summary(seconds, time.process_time() - cpu0)


async def http_max(spec: dict[str, Any]) -> dict[str, Any]:
    reqs = build_requests(spec)
    conns = await _connect(spec)

    async def call(j: int, n: int) -> int:
        return await conns[j].request(reqs[n % len(reqs)])

    return await _closed_loop(spec, call)


async def redis_get(spec: dict[str, Any]) -> dict[str, Any]:
    rng = random.Random(spec.get("seed", 0))
    keys = [f"{spec['key_prefix']}{rng.randrange(int(spec['users'])):06d}" for _ in range(20_000)]
    client = open_redis(
        RedisSettings(url=spec["redis_url"]), retries=0, max_connections=int(spec["connections"])
    )
    async with client:
        await asyncio.gather(*(client.ping() for _ in range(int(spec["connections"]))))

        async def call(j: int, n: int) -> int:
            value = await client.get(keys[n % len(keys)])
            return 200 if value is not None else 404

        return await _closed_loop(spec, call)


_CANNED_BODY = b'{"hints":[' + b",".join([b'{"query":"canned query","source":"u2q"}'] * 10) + b"]}"
_CANNED = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
    + str(len(_CANNED_BODY)).encode()
    + b"\r\n\r\n"
    + _CANNED_BODY
)


class _Canned(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        requests = self.buf.count(b"\r\n\r\n")
        if requests:
            self.buf = self.buf[self.buf.rfind(b"\r\n\r\n") + 4 :]
            self.transport.write(_CANNED * requests)


async def canned(spec: dict[str, Any]) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Canned, spec["host"], int(spec["port"]))
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
    print(json.dumps({"listening": spec["port"]}), flush=True)
    await stop
    server.close()
    return {}


JOBS = {"http_rate": http_rate, "http_max": http_max, "redis_get": redis_get, "canned": canned}


def main(argv: list[str]) -> None:
    spec = json.loads(argv[1])
    result = uvloop.run(JOBS[spec["job"]](spec))
    if spec["job"] != "canned":
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv)
