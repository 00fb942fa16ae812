"""``aigq bench generate``: prompt compression, micro-batching and freshness, in one run.

1. **Compression**: real AOL sessions are run through the session processor (in time order,
   default trigger policy); the regeneration requests it emits are rendered as the compressed
   and the verbose prompt and tokenised with the model's tokenizer (special tokens are one
   token each). Goal: compressed ÷ verbose ≤ 0.4.
2. **Micro-batching**: the same prompts sent to the same backend one at a time, then in
   micro-batches of ``batch_size``. Goal: batched ÷ one-at-a-time requests/s ≥ 4.
3. **Freshness**: the generator worker consumes requests produced at a fixed rate, with
   event times of "now", and writes the u2q cache; the results topic gives, per request,
   event time → cache write, and the backend time of its batch, reported separately.

The backend is a vLLM server on the CPU (:mod:`generators.vllm_server`) serving the model
folder given, or a tiny random-weight model built here when none is; the figures say which.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from aigq.codec import encode
from aigq.datasets import Malformed
from aigq.datasets.aol import iter_aol
from aigq.events import RegenerationRequest
from aigq.settings import KafkaSettings, RedisSettings, TopicSettings
from generators.backends import open_backend
from generators.prompt import compressed_prompt, verbose_prompt
from generators.settings import GeneratorSettings
from streams.processor import SessionProcessor
from streams.session import SessionConfig
from streams.triggers import TriggerPolicy


def aol_requests(aol: Path, max_events: int, max_requests: int) -> list[RegenerationRequest]:
    """Regeneration requests from the AOL log, as the session agent would emit them."""
    processor = SessionProcessor(SessionConfig(), TriggerPolicy(), load=lambda user: None)
    out: list[RegenerationRequest] = []
    for n, item in enumerate(iter_aol(aol)):
        if n >= max_events or len(out) >= max_requests:
            break
        if isinstance(item, Malformed):
            continue
        processor.process(item.type, 0, n, encode(item))
        if n % 2_000 == 1_999:
            drained = processor.drain()
            out.extend(RegenerationRequest.model_validate_json(r) for _, r in drained.requests)
    return out[:max_requests]


@dataclass
class Compression:
    prompts: int
    compressed_tokens: int
    verbose_tokens: int
    per_prompt: list[float] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return self.compressed_tokens / max(self.verbose_tokens, 1)


def compression(requests: Sequence[RegenerationRequest], tokenizer: Any, k: int) -> Compression:
    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False).input_ids)

    result = Compression(len(requests), 0, 0)
    for r in requests:
        c = count(compressed_prompt(r.profile, r.recent, now_ms=r.event_ts, k=k))
        v = count(verbose_prompt(r.profile, r.recent, now_ms=r.event_ts, k=k))
        result.compressed_tokens += c
        result.verbose_tokens += v
        result.per_prompt.append(c / v)
    return result


async def batching(settings: GeneratorSettings, prompts: Sequence[str]) -> tuple[float, float]:
    """Requests/s one at a time, then in micro-batches of ``settings.batch_size``."""
    async with open_backend(settings) as backend:
        await backend.generate(prompts[:2])  # warm-up
        started = time.perf_counter()
        for p in prompts:
            await backend.generate([p])
        single = len(prompts) / (time.perf_counter() - started)
        started = time.perf_counter()
        size = settings.batch_size
        for i in range(0, len(prompts), size):
            await backend.generate(prompts[i : i + size])
        batched = len(prompts) / (time.perf_counter() - started)
    return single, batched


@dataclass
class Freshness:
    requests: int
    freshness_ms: list[float]
    model_ms: list[float]


async def freshness(
    kafka: KafkaSettings,
    topics: TopicSettings,
    redis: RedisSettings,
    settings: GeneratorSettings,
    requests: Sequence[RegenerationRequest],
    rate_per_s: float,
) -> Freshness:
    """Produce ``requests`` at ``rate_per_s`` with event time = now, through the worker."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    from generators.worker import GeneratorWorker

    worker = GeneratorWorker(kafka, topics, redis, settings)
    task = asyncio.create_task(worker.run())
    producer = AIOKafkaProducer(**kafka.aiokafka_config(), enable_idempotence=False)
    await producer.start()
    try:
        await asyncio.sleep(3)  # the group join
        for i, r in enumerate(requests):
            now = int(time.time() * 1000)
            fresh = r.model_copy(update={"event_ts": now, "created_ts": now, "version": 10**6 + i})
            await producer.send(topics.name("regenerate"), encode(fresh), key=r.user_id.encode())
            await asyncio.sleep(1 / rate_per_s)
        await producer.flush()
        deadline = time.monotonic() + 600
        while worker.done < len(requests) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.2)
    finally:
        worker.stop()
        await task
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topics.name("results"), **kafka.aiokafka_config(), auto_offset_reset="earliest"
    )
    await consumer.start()
    fresh_ms: list[float] = []
    model_ms: list[float] = []
    try:
        while len(fresh_ms) < len(requests):
            got = await consumer.getmany(timeout_ms=2_000)
            if not got:
                break
            for batch in got.values():
                for m in batch:
                    record = orjson.loads(m.value)
                    fresh_ms.append(record["generated_ts"] - record["event_ts"])
                    model_ms.append(record["model_ms"])
    finally:
        await consumer.stop()
    return Freshness(len(requests), fresh_ms, model_ms)


def tmpdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="aigq-bench-gen-"))


def run_id() -> str:
    return uuid.uuid4().hex[:8]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")
