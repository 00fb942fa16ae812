"""Drive a running loop: replay events at a fixed rate, probe the read API at every search,
and read the loop's lag every second.

The events are encoded before the clock starts, so pacing costs only the sends. Each record's
Kafka timestamp is its send time (the producer's clock), which the session worker passes on
as the request's ``ingest_ts``. Just before a search is sent, the read API is asked for the
user's hints: that is the list the cache serves at the moment of that search, and the search
cannot have changed it yet.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import aiohttp
from aiokafka import AIOKafkaProducer

from aigq.codec import encode
from aigq.errors import ServiceError
from aigq.events import Event, SearchEvent
from aigq.settings import KafkaSettings, TopicSettings
from shell.e2e.monitor import TopicReader, metric_by_label, metric_sum
from shell.e2e.report import LagSample, Probe

# A request is answered when the generator dropped it for a newer one of the same user, logged
# its list (written, refused as stale, or malformed) or dead-lettered it.
ANSWERED = ("superseded", "written", "stale", "malformed", "dead_letters")


class Outgoing(NamedTuple):
    topic: str
    key: bytes
    value: bytes
    user_id: str
    query: str | None  # set for searches: they are probed


def prepare(events: Sequence[Event], topics: TopicSettings) -> list[Outgoing]:
    return [
        Outgoing(
            topics.name(e.type),
            e.user_id.encode(),
            encode(e),
            e.user_id,
            e.query if isinstance(e, SearchEvent) else None,
        )
        for e in events
    ]


@dataclass
class DriveResult:
    sent: int = 0
    failed: int = 0
    elapsed_s: float = 0.0
    started_ms: int = 0
    probes: list[Probe] = field(default_factory=list)
    probe_errors: int = 0
    lag: list[LagSample] = field(default_factory=list)
    requests: list[bytes] = field(default_factory=list)
    results: list[bytes] = field(default_factory=list)
    drained: bool = False
    drain_s: float = 0.0
    counts: dict[str, float] = field(default_factory=dict)
    """at the end: the worker's decisions (``decision:<outcome>``) and the generator's requests
    given no model call (``superseded:<reason>``)"""
    applied: int = 0  # events the session worker applied (its counter)
    answered: int = 0  # requests the generator answered (its counters)


@dataclass(frozen=True)
class Endpoints:
    api_url: str
    worker_metrics: str
    generator_metrics: str


async def drive(
    outgoing: Sequence[Outgoing],
    kafka: KafkaSettings,
    topics: TopicSettings,
    endpoints: Endpoints,
    rate: float,
    k: int = 10,
    drain_timeout_s: float = 120.0,
    progress: Callable[[str], None] | None = None,
) -> DriveResult:
    """Send ``outgoing`` at ``rate`` events/s, then wait (up to ``drain_timeout_s``) until the
    worker applied every event and the generator answered every request."""
    out = DriveResult()
    readers = [
        TopicReader(kafka, topics.name("regenerate")),
        TopicReader(kafka, topics.name("results")),
    ]
    producer = AIOKafkaProducer(
        **kafka.aiokafka_config(), enable_idempotence=False, linger_ms=5, acks=1
    )
    await producer.start()
    for reader in readers:
        await reader.start()
    http = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=32), timeout=aiohttp.ClientTimeout(total=5)
    )
    probes: set[asyncio.Task[None]] = set()

    async def probe(user: str, query: str) -> None:
        at = int(time.time() * 1000)
        try:
            async with http.get(f"{endpoints.api_url}/v1/hints/{user}", params={"k": k}) as r:
                body = await r.json() if r.status == 200 else {"hints": []}
                served = body.get("hints", [])
                hints = tuple(h["query"] for h in served)
                sources = tuple(h["source"] for h in served)
                out.probes.append(Probe(user, query, at, hints, r.status, sources))
        except (aiohttp.ClientError, TimeoutError):
            out.probe_errors += 1

    def sent(future: asyncio.Future[object]) -> None:
        if future.cancelled() or future.exception() is not None:
            out.failed += 1

    async def read_lag(at_s: float, produced: int) -> None:
        worker = await _metrics(http, endpoints.worker_metrics)
        gen = await _metrics(http, endpoints.generator_metrics)
        applied = int(metric_sum(worker, "aigq_stream_events_total"))
        answered = int(sum(metric_sum(gen, f"aigq_generate_{name}_total") for name in ANSWERED))
        requests = len(readers[0].values)
        out.applied, out.answered = applied, answered
        out.counts = {
            **{f"decision:{k}": v for k, v in
               metric_by_label(worker, "aigq_stream_decisions_total", "outcome").items()},
            **{f"superseded:{k}": v for k, v in
               metric_by_label(gen, "aigq_generate_superseded_total", "reason").items()},
        }  # fmt: skip
        lag = LagSample(at_s, produced, max(0, produced - applied), max(0, requests - answered))
        if not out.lag or at_s - out.lag[-1].at_s >= 0.99:  # one sample a second
            out.lag.append(lag)

    try:
        loop = asyncio.get_running_loop()
        start = loop.time()
        out.started_ms = int(time.time() * 1000)
        next_lag, i, n = 1.0, 0, len(outgoing)
        while i < n:
            now = loop.time() - start
            due = min(n, int(now * rate) + 1)
            while i < due:
                o = outgoing[i]
                if o.query is not None:
                    task = asyncio.create_task(probe(o.user_id, o.query))
                    probes.add(task)
                    task.add_done_callback(probes.discard)
                    await asyncio.sleep(0)  # the probe's GET goes out before the search
                future = await producer.send(o.topic, o.value, key=o.key)
                future.add_done_callback(sent)
                i += 1
            if now >= next_lag:
                await read_lag(now, i)
                if progress:
                    last = out.lag[-1]
                    progress(
                        f"{now:5.0f} s  sent {i:,}  session lag {last.session_lag:,}  "
                        f"generator lag {last.generator_lag:,}"
                    )
                next_lag += 1.0
            await asyncio.sleep(0.002)
        await producer.flush()
        out.sent, out.elapsed_s = i - out.failed, loop.time() - start
        if probes:
            await asyncio.gather(*probes)
        await _drain(out, read_lag, lambda: len(readers[0].values), start, i,
                     drain_timeout_s, progress)  # fmt: skip
    finally:
        await http.close()
        await producer.stop()
        for reader in readers:
            await reader.stop()
    out.requests, out.results = readers[0].values, readers[1].values
    return out


async def _drain(
    out: DriveResult,
    read_lag: Callable[[float, int], Awaitable[None]],
    requested: Callable[[], int],
    start: float,
    sent: int,
    timeout_s: float,
    progress: Callable[[str], None] | None,
) -> None:
    """Wait until every event is applied and every request answered (or ``timeout_s``): the
    loop has drained when that holds and still holds 1.5 s later (a last flush's requests,
    the last results records); ``out.drain_s`` is when it first held. Checked 4 times a second.
    """
    loop = asyncio.get_running_loop()
    drain_start, shown = loop.time(), -1
    while loop.time() - drain_start < timeout_s:
        now = loop.time() - start
        await read_lag(now, sent)
        if out.applied >= out.sent and out.answered >= requested():
            held = loop.time()
            await asyncio.sleep(1.5)
            await read_lag(loop.time() - start, sent)
            if out.answered >= requested():
                out.drained, out.drain_s = True, held - drain_start
                return
        if progress and int(now) // 5 != shown:
            shown = int(now) // 5
            last = out.lag[-1]
            progress(
                f"{now:5.0f} s  draining: session lag {last.session_lag:,}  "
                f"generator lag {last.generator_lag:,}"
            )
        await asyncio.sleep(0.25)
    out.drain_s = loop.time() - drain_start


async def _metrics(http: aiohttp.ClientSession, url: str) -> str:
    try:
        async with http.get(url) as reply:
            return await reply.text()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise ServiceError(f"no metrics at {url}: {exc!r}") from exc
