"""The exposure log: every served hint list to ``<prefix>.hint_exposure``, off the read path.

Issue 19: served lists and hint clicks are what CTR per model version is counted from, but a
read that waits for Kafka would add its latency (and its outages) to every request. So the
request path only appends the list's strings (:func:`cache.exposure_record.exposure_of`) to a
bounded in-memory buffer (:meth:`ExposureLog.log`: no encoding, no await, no I/O, never an
exception). One
background task gathers what arrives for ``AIGQ_SERVE_EXPOSURE_LINGER_MS``, takes up to
``AIGQ_SERVE_EXPOSURE_BATCH`` records, encodes them (:func:`encode_exposure`) into one
producer batch per partition, hands those to one aiokafka producer and gathers their
deliveries, counting each record once in ``aigq_serve_exposures_total{outcome}``:

- ``sent``: Kafka acknowledged it;
- ``buffer_full``: the buffer was full while Kafka was up (the sender cannot keep up);
- ``kafka_unavailable``: the buffer was full while the producer could not connect or its last
  send failed, or the send itself failed or passed ``AIGQ_SERVE_EXPOSURE_TIMEOUT_MS``, or it
  was still buffered at shutdown with Kafka down;
- ``invalid``: a field broke the event's bounds (:class:`aigq.events.HintExposureEvent`);
- ``shutdown``: still buffered or in flight when the flush bound at shutdown passed.

While Kafka is down the buffer keeps what it holds (a short outage loses nothing) and new
records past its capacity are dropped; the producer reconnects with a doubling backoff (0.1 s
to 5 s) and failures are logged at most once a second. Memory is bounded by the buffer's
capacity plus one batch in flight.

The same producer carries hint clicks (:mod:`cache.clicks`).

The sender shares the API process's core with the requests, so what it costs was measured
(``aigq bench serve --exposures``, docs/read-api.md): alone, 12-14 µs of CPU a list; with it
the API process spent 111 µs a request flat out, against 92 µs without. Encoding skips
pydantic on purpose (:mod:`cache.exposure_record`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from aigq.logging import get_logger
from aigq.settings import KafkaSettings, TopicSettings
from cache.exposure_record import Exposure, encode_exposure, exposure_of
from cache.hints import HintResult
from cache.settings import ServeSettings

if TYPE_CHECKING:
    from aiokafka import AIOKafkaProducer

log = get_logger(__name__)

_MIN_BACKOFF_S = 0.1
_MAX_BACKOFF_S = 5.0
_YIELD_EVERY = 16  # records encoded between two yields to the event loop (~0.15 ms)
_PLACED_USERS = 100_000  # users whose partition is remembered (then forgotten all at once)
_MAX_BATCH_BYTES = 256 * 1024  # a producer batch (aiokafka's default, 16 KiB, is ~20 lists)


class ExposureBuffer:
    """A bounded FIFO of exposures; a record that finds it full is dropped and counted.

    ``kafka_down`` (set by the sender) names the reason of such a drop: ``kafka_unavailable``
    while the producer cannot deliver, ``buffer_full`` otherwise.
    """

    def __init__(self, capacity: int, counts: dict[str, int]) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.kafka_down = True  # until the producer has connected
        self._items: deque[Exposure] = deque()
        self._counts = counts

    def __len__(self) -> int:
        return len(self._items)

    def append(self, exposure: Exposure) -> bool:
        """Keep ``exposure`` unless the buffer is full (then count the drop); say which."""
        if len(self._items) >= self.capacity:
            self._counts["kafka_unavailable" if self.kafka_down else "buffer_full"] += 1
            return False
        self._items.append(exposure)
        return True

    def take(self, most: int) -> list[Exposure]:
        """Up to ``most`` of the oldest records, removed from the buffer."""
        items = self._items
        return [items.popleft() for _ in range(min(most, len(items)))]

    def drain(self) -> int:
        """Empty the buffer; return how many records it held."""
        held = len(self._items)
        self._items.clear()
        return held


class Throttled:
    """A warning logged at most once a second per event (an outage fails every send)."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[float, int]] = {}

    def warn(self, event: str, error: BaseException | str) -> None:
        now = time.monotonic()
        last, suppressed = self._last.get(event, (0.0, 0))
        if now - last >= 1.0:
            log.warning(event, error=str(error) or repr(error), suppressed_since_last=suppressed)
            self._last[event] = (now, 0)
        else:
            self._last[event] = (last, suppressed + 1)


class ExposureLog:
    """The buffer, the producer and the task that moves records from one to the other.

    :meth:`start` and :meth:`stop` belong to the app's lifespan, :meth:`log` to the request
    path, :attr:`producer` to the click endpoint. ``counts`` is the
    ``aigq_serve_exposures_total`` series by outcome (:class:`cache.serve_metrics.ServeMetrics`).
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        topics: TopicSettings,
        serve: ServeSettings,
        counts: dict[str, int],
    ) -> None:
        self.buffer = ExposureBuffer(serve.exposure_buffer, counts)
        self._kafka = kafka
        self._serve = serve
        self._topic = topics.name("hint_exposure")
        self.click_topic = topics.name("hint_click")
        self._counts = counts
        self._producer: AIOKafkaProducer | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._idle = False
        self._unsettled = 0  # records taken from the buffer and not yet counted
        self._throttle = Throttled()
        self._linger_s = serve.exposure_linger_ms / 1000
        self._partitions: list[int] = []
        self._placed: dict[str, tuple[bytes, int]] = {}  # user -> (key, partition)

    # --- the request path ---------------------------------------------------------------------

    def log(self, result: HintResult, request_id: str) -> None:
        """Queue one served list; never blocks, never raises."""
        if self.buffer.append(exposure_of(result, request_id)) and self._idle:
            self._idle = False
            self._wake.set()

    @property
    def producer(self) -> AIOKafkaProducer | None:
        """The producer once it has connected (the click endpoint sends through it too)."""
        return self._producer

    # --- the lifespan -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the sender; it connects on its own, so a Kafka outage does not stop the API."""
        self._wake, self._stopping = asyncio.Event(), asyncio.Event()  # this loop's, afresh
        self._task = asyncio.create_task(self._run(), name="exposure-log")
        self._task.add_done_callback(self._crashed)

    async def stop(self) -> None:
        """Send what is buffered within ``AIGQ_SERVE_EXPOSURE_FLUSH_S``, count the rest, close."""
        task = self._task
        if task is None:
            return
        self._stopping.set()
        self._wake.set()
        await asyncio.wait({task}, timeout=self._serve.exposure_flush_s)  # raises nothing
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        left = self._unsettled + self.buffer.drain()
        self._unsettled = 0
        if left:
            reason = "kafka_unavailable" if self.buffer.kafka_down else "shutdown"
            self._counts[reason] += left
            log.warning("exposures_not_sent_at_shutdown", records=left, reason=reason)
        await self._close_producer()
        self._task = None

    def _crashed(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("exposure_log_crashed", exc_info=task.exception())

    # --- the sender ---------------------------------------------------------------------------

    async def _run(self) -> None:
        backoff = _MIN_BACKOFF_S
        while True:
            if self._producer is None:
                if self._stopping.is_set() and not self.buffer:
                    return
                if not await self._connect():
                    if self._stopping.is_set():  # tried once more to flush: give up
                        return
                    await self._pause(backoff)
                    backoff = min(backoff * 2, _MAX_BACKOFF_S)
                    continue
            if not self.buffer:
                if self._stopping.is_set():
                    return
                self._wake.clear()
                self._idle = True
                await self._wake.wait()
                continue
            await self._pause(self._linger_s)  # gather a batch (at once when stopping)
            if await self._send(self.buffer.take(self._serve.exposure_batch)):
                backoff = _MIN_BACKOFF_S
            elif not self._stopping.is_set():
                await self._pause(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if the log is stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _connect(self) -> bool:
        from aiokafka import AIOKafkaProducer
        from aiokafka.errors import KafkaError

        timeout_ms = self._serve.exposure_timeout_ms
        producer = AIOKafkaProducer(
            **self._kafka.aiokafka_config() | {"request_timeout_ms": timeout_ms},
            enable_idempotence=False,  # the local tansu broker has no idempotent producers
            max_batch_size=_MAX_BATCH_BYTES,
        )
        try:
            async with asyncio.timeout(timeout_ms / 1000):
                await producer.start()
        except asyncio.CancelledError:  # stopped while connecting
            with contextlib.suppress(KafkaError, OSError):
                await producer.stop()
            raise
        except (TimeoutError, KafkaError, OSError) as exc:
            self._throttle.warn("exposure_kafka_unavailable", exc)
            with contextlib.suppress(KafkaError, OSError):
                await producer.stop()
            return False
        self._producer = producer
        log.info("exposure_log_connected", bootstrap_servers=self._kafka.bootstrap_servers)
        return True

    async def _close_producer(self) -> None:
        from aiokafka.errors import KafkaError

        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(TimeoutError, KafkaError, OSError):
                async with asyncio.timeout(self._serve.exposure_flush_s):
                    await producer.stop()

    async def _send(self, batch: list[Exposure]) -> bool:
        """Send one batch and count every record of it; False if Kafka failed any.

        Records go into one producer batch per partition (``create_batch``/``send_batch``:
        7.7 µs a record here against 15-20 µs through ``send``), keyed by user id and placed
        by the producer's own partitioner (remembered per user), so a user's exposures share a
        partition as with ``send``. Every ``_YIELD_EVERY`` records the requests get the loop.
        """
        from aiokafka.errors import KafkaError
        from aiokafka.partitioner import DefaultPartitioner

        assert self._producer is not None
        producer, counts, topic = self._producer, self._counts, self._topic
        self._unsettled = len(batch)
        deliveries: list[tuple[asyncio.Future[Any], int]] = []  # (delivery, records in it)
        error: BaseException | None = None
        try:
            partitions = sorted(await producer.partitions_for(topic))
            if partitions != self._partitions:  # the topic grew: users move
                self._partitions, self._placed = partitions, {}
            placed, partitioner = self._placed, DefaultPartitioner()
            building: dict[int, tuple[Any, int]] = {}  # partition -> (batch builder, records)
            for n, exposure in enumerate(batch, 1):
                if n % _YIELD_EVERY == 0:
                    await asyncio.sleep(0)
                value = encode_exposure(exposure)
                if value is None:
                    self._invalid(exposure)
                    continue
                user = exposure.user_id
                if user in placed:
                    key, partition = placed[user]
                else:  # murmur2 is pure Python (2 µs): remember where a user's records go
                    if len(placed) >= _PLACED_USERS:
                        placed.clear()
                    key = user.encode()
                    partition = partitioner(key, partitions, partitions)
                    placed[user] = key, partition
                builder, held = building.get(partition) or (producer.create_batch(), 0)
                ts = exposure.ts
                if builder.append(key=key, value=value, timestamp=ts) is None:
                    if held:  # full: send it, start another
                        sent = await producer.send_batch(builder, topic, partition=partition)
                        deliveries.append((sent, held))
                        builder, held = producer.create_batch(), 0
                        building[partition] = (builder, held)
                    if builder.append(key=key, value=value, timestamp=ts) is None:
                        self._invalid(exposure)  # larger than a whole batch
                        continue
                building[partition] = (builder, held + 1)
            for partition, (builder, held) in building.items():
                if held:
                    sent = await producer.send_batch(builder, topic, partition=partition)
                    deliveries.append((sent, held))
        except KafkaError as exc:  # no metadata or no room within the timeout
            error = exc
        outcomes = await asyncio.gather(*(d for d, _ in deliveries), return_exceptions=True)
        for (_, held), outcome in zip(deliveries, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                error = error or outcome
            else:
                counts["sent"] += held
                self._unsettled -= held
        counts["kafka_unavailable"] += self._unsettled  # failed, or never handed to Kafka
        self._unsettled = 0
        self.buffer.kafka_down = error is not None
        if error is not None:
            self._throttle.warn("exposure_kafka_unavailable", error)
        return error is None

    def _invalid(self, exposure: Exposure) -> None:
        self._counts["invalid"] += 1
        self._unsettled -= 1
        self._throttle.warn("exposure_invalid", f"request_id={exposure.request_id}")


__all__ = [
    "Exposure",
    "ExposureBuffer",
    "ExposureLog",
    "Throttled",
    "encode_exposure",
    "exposure_of",
]
