"""Traffic while a fault runs: records sent at a fixed rate, and the read API asked at a fixed
rate, each in a thread of its own so that the scenario can kill and restart things meanwhile.

``shell.e2e.drive.drive`` is the loop's benchmark driver: it treats a /metrics page that does
not answer as fatal and measures freshness. Here the processes are meant to disappear, so the
sender only sends and remembers where each record landed (``topic/partition@offset``: the
origin a dead letter names), and the scenarios read the results back themselves.
"""

from __future__ import annotations

import asyncio
import http.client
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from aiokafka import AIOKafkaProducer

from aigq.events import Event
from aigq.settings import KafkaSettings, TopicSettings
from shell.e2e.drive import prepare
from shell.e2e.run import load_slice


class Record(NamedTuple):
    """One record to send; ``user`` is whose session must count it (None: it is invalid and
    must be dead-lettered)."""

    topic: str
    key: bytes | None
    value: bytes | None
    user: str | None


def synthetic(limit: int) -> list[Event]:
    """The synthetic shop's first ``limit`` events (the same world ``aigq demo`` falls back to)."""
    return load_slice(Path("/nonexistent"), limit, lookahead=0, source="synthetic").events


def records(events: Iterable[Event], topics: TopicSettings) -> list[Record]:
    """Events keyed by their user, as the loop's producers send them."""
    return [Record(o.topic, o.key, o.value, o.user_id) for o in prepare(list(events), topics)]


@dataclass
class Sent:
    """Where each record landed (None: the broker never acknowledged it)."""

    origins: list[str | None]
    errors: list[str] = field(default_factory=list)

    def want(self, sent: Sequence[Record]) -> Counter[str]:
        """Valid events per user that the broker acknowledged."""
        return Counter(r.user for r, o in zip(sent, self.origins, strict=True) if o and r.user)

    def invalid(self, sent: Sequence[Record]) -> list[str]:
        """The origins of the acknowledged invalid records."""
        return [o for r, o in zip(sent, self.origins, strict=True) if o and r.user is None]


class Sender:
    """Send ``records`` at ``rate`` per second from a thread; :meth:`join` waits for the acks."""

    def __init__(self, kafka: KafkaSettings, batch: Sequence[Record], rate: float) -> None:
        self.kafka, self.batch, self.rate = kafka, batch, rate
        self.handed = 0  # records given to the producer so far
        self._result: Sent | None = None
        self._thread = threading.Thread(target=self._run, name="faults-sender", daemon=True)

    def start(self) -> Sender:
        self._thread.start()
        return self

    def join(self, timeout_s: float = 120.0) -> Sent:
        self._thread.join(timeout_s)
        if self._result is None:
            raise TimeoutError(f"records not acknowledged within {timeout_s:.0f} s")
        return self._result

    def _run(self) -> None:
        self._result = asyncio.run(self._send())

    async def _send(self) -> Sent:
        out = Sent([None] * len(self.batch))
        producer = AIOKafkaProducer(
            **self.kafka.aiokafka_config(), enable_idempotence=False, linger_ms=5, acks="all"
        )
        await producer.start()
        try:
            futures: list[asyncio.Future[object]] = []
            loop = asyncio.get_running_loop()
            start = loop.time()
            for i, record in enumerate(self.batch):
                delay = start + i / self.rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                futures.append(await producer.send(record.topic, record.value, key=record.key))
                self.handed = i + 1
            await producer.flush()
            for i, future in enumerate(futures):
                try:
                    meta = await future
                except Exception as exc:  # noqa: BLE001 - counted as not sent, with the reason
                    out.errors.append(repr(exc))
                    continue
                out.origins[i] = f"{meta.topic}/{meta.partition}@{meta.offset}"  # type: ignore[attr-defined]
        finally:
            await producer.stop()
        return out


class Answer(NamedTuple):
    at: float  # time.monotonic() when asked
    status: int  # 0: no answer (refused, reset, timed out)
    seconds: float


class Prober:
    """Ask the read API for a user's hints ``rate`` times a second from a thread, until stopped;
    every answer is kept with its time."""

    def __init__(self, api_url: str, users: Sequence[str], rate: float = 10.0) -> None:
        host, port = api_url.removeprefix("http://").rsplit(":", 1)
        self.host, self.port, self.users, self.rate = host, int(port), users or ["u0000"], rate
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="faults-prober", daemon=True)

    def start(self) -> Prober:
        self._thread.start()
        return self

    def stop(self) -> list[Answer]:
        self._stop.set()
        self._thread.join(10)
        return self.answers

    def failed(self, since: float = 0.0) -> int:
        return sum(a.status != 200 for a in self.answers if a.at >= since)

    def _run(self) -> None:
        i = 0
        while not self._stop.wait(1 / self.rate):
            user = self.users[i % len(self.users)]
            i += 1
            at = time.monotonic()
            conn = http.client.HTTPConnection(self.host, self.port, timeout=2.0)
            try:
                conn.request("GET", f"/v1/hints/{user}?k=10")
                reply = conn.getresponse()
                reply.read()
                status = reply.status
            except (OSError, http.client.HTTPException):
                status = 0
            finally:
                conn.close()
            self.answers.append(Answer(at, status, time.monotonic() - at))
