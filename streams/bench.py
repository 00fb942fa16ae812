"""``aigq bench stream``: our session agent against three baselines, side by side, in one run.

The run starts a fresh local broker (tansu keeps every record in memory, so a used one skews
the figures), produces the events once, then runs each consumer in a process of its own and a
consumer group of its own over the same topics:

1. ``aiokafka``: a raw aiokafka consumer that only counts (no Faust at all);
2. ``faust_count``: a minimal Faust agent that counts into a dict (the Faust ceiling);
3. ``faust_table``: a naive Faust agent that writes its table once per event;
4. ``sessions``: our session agent (state, triggers, requests, coalesced durable flushes).

The variants run round-robin, several rounds, and the medians are compared.
Each is timed from its first record to its N-th (for ours: the N-th applied *and* durably
flushed, with a flush started as soon as the N-th is applied rather than at the next timer
tick), so group joins and start-up are left out. The goals: (4) >= 0.8 x (2) and (4) >= 2.5 x (3).
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from aigq.datasets.synthetic import SyntheticConfig
from aigq.dev.probe import free_port
from aigq.dev.stack import DevSettings, DevStack
from aigq.events import EVENT_TYPES
from aigq.settings import KafkaSettings, RedisSettings, TopicSettings, WebSettings
from streams.replay import ReplaySettings
from streams.replay_workers import ReplayJob, SourceSpec, default_workers, replay_with_workers
from streams.settings import StreamSettings

VARIANTS = ("aiokafka", "faust_count", "faust_table", "sessions", "sessions_recent")
"""``sessions`` is the session agent as the streaming core is specified (state, triggers,
requests); ``sessions_recent`` adds what the read API needs of it, users' recent triggers and
search histories written to Redis each flush (the production default), so its cost shows on
its own."""
_MARK = "BENCH "


def median_rates(results: list[Result]) -> dict[str, float]:
    """Each variant's median events/s over its runs, in the order the variants first ran."""
    rates: dict[str, list[float]] = {}
    for result in results:
        rates.setdefault(result.variant, []).append(result.rate)
    return {variant: statistics.median(values) for variant, values in rates.items()}


@dataclass(frozen=True)
class Result:
    variant: str
    events: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


def run_bench(
    events: int, users: int, partitions: int, variants: tuple[str, ...], rounds: int = 1
) -> list[Result]:
    """Start a broker, produce, then run the variants in turn, ``rounds`` times round-robin
    (this machine's speed drifts by tens of percent over minutes: compare medians); return
    every run's result."""
    with tempfile.TemporaryDirectory(prefix="aigq-bench-") as tmp:
        stack = DevStack(
            KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}"),
            RedisSettings(),
            TopicSettings(prefix="bench", partitions=partitions),
            DevSettings(state_dir=Path(tmp) / "stack", start_redis=False),
        )
        stack.up()
        try:
            days = max(1, -(-events // (users * 12)))  # the generator gives ~12 events/user/day
            job = ReplayJob(
                SourceSpec("synthetic", None, Path(tmp), SyntheticConfig(users=users, days=days)),
                stack.kafka,
                ReplaySettings(),
                stack.topics,
                speed=None,
                limit=events,
            )
            report, _ = replay_with_workers(job, default_workers())
            produced = report.events
            print(f"produced {produced:,} events for {users:,} users", flush=True)
            return [
                _run_variant(v, stack, produced, Path(tmp)) for _ in range(rounds) for v in variants
            ]
        finally:
            stack.down()


def _run_variant(variant: str, stack: DevStack, events: int, tmp: Path) -> Result:
    env = {
        **os.environ,
        "AIGQ_KAFKA_BOOTSTRAP_SERVERS": stack.kafka.bootstrap_servers,
        "AIGQ_TOPICS_PREFIX": stack.topics.prefix,
        "AIGQ_TOPICS_PARTITIONS": str(stack.topics.partitions),
    }
    argv = [sys.executable, "-m", "streams.bench", variant, str(events), str(tmp)]
    started = time.monotonic()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith(_MARK)]
    if done.returncode != 0 or not lines:
        tail = (done.stdout + done.stderr)[-3000:]
        raise RuntimeError(f"bench variant {variant} failed (exit {done.returncode}):\n{tail}")
    record = orjson.loads(lines[-1][len(_MARK) :])
    result = Result(variant, record["events"], record["seconds"])
    print(
        f"  {variant:<12} {result.rate:>10,.0f} events/s "
        f"({result.events:,} in {result.seconds:.2f} s; "
        f"process {time.monotonic() - started:.0f} s)",
        flush=True,
    )
    return result


def _report(events: int, seconds: float) -> None:
    print(_MARK + orjson.dumps({"events": events, "seconds": seconds}).decode(), flush=True)


# --- the variants, each run as `python -m streams.bench VARIANT N TMP` -------------------------


def _source_names(topics: TopicSettings) -> list[str]:
    return [topics.name(kind) for kind in EVENT_TYPES]


async def _aiokafka(kafka: KafkaSettings, topics: TopicSettings, events: int) -> None:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        *_source_names(topics),
        bootstrap_servers=kafka.bootstrap_servers,
        group_id=f"bench-aiokafka-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        session_timeout_ms=6_000,
        heartbeat_interval_ms=2_000,
    )
    await consumer.start()
    try:
        seen, started = 0, 0.0
        while seen < events:
            batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for records in batches.values():
                if not started:
                    started = time.monotonic()
                seen += len(records)
        _report(seen, time.monotonic() - started)
    finally:
        await consumer.stop()


def _faust_baseline(
    kafka: KafkaSettings, topics: TopicSettings, events: int, tmp: Path, table: bool
) -> None:
    import faust

    from streams.faust_app import faust_broker_options, run_app

    app = faust.App(
        f"bench-{'table' if table else 'count'}-{uuid.uuid4().hex[:6]}",
        **faust_broker_options(kafka),
        store="memory://",
        datadir=str(tmp / uuid.uuid4().hex),
        topic_partitions=topics.partitions,
        broker_session_timeout=6,
        producer_max_batch_size=16,
        consumer_auto_offset_reset="earliest",
        table_standby_replicas=0,
        web_enabled=False,
    )
    source = app.topic(*_source_names(topics), key_serializer="raw", value_serializer="raw")
    counts: Any = (
        app.Table("counts", default=int, partitions=topics.partitions, key_type=bytes)
        if table
        else {}
    )
    clock = {"started": 0.0, "seen": 0}

    @app.agent(source)
    async def count(stream: Any) -> None:
        async for event in stream.events():
            if not clock["started"]:
                clock["started"] = time.monotonic()
            if table:
                counts[event.key] += 1  # one changelog write per event
            else:
                counts[event.key] = counts.get(event.key, 0) + 1
            clock["seen"] += 1
            if clock["seen"] == events:
                _report(events, time.monotonic() - clock["started"])
                os.kill(os.getpid(), signal.SIGTERM)

    run_app(app)


def _sessions(
    kafka: KafkaSettings, topics: TopicSettings, events: int, tmp: Path, recent: bool
) -> None:
    from streams.worker import SessionWorker

    def on_flushed(worker: SessionWorker) -> None:
        if worker.flushed >= events and worker.started_at is not None:
            _report(worker.flushed, time.monotonic() - worker.started_at)
            worker.stop()

    settings = StreamSettings(
        app_id=f"bench-sessions-{uuid.uuid4().hex[:6]}",
        data_dir=str(tmp),
        session_timeout_s=6,
        recent_triggers=recent,
        history=recent,  # the Redis writes are on or off together
    )
    web = WebSettings(port=free_port())
    # recent triggers: the same 2,000 users' keys every run
    redis = RedisSettings(key_prefix="aigq-bench:")
    SessionWorker(kafka, topics, web, settings, redis, on_flushed=on_flushed, flush_at=events).run()


def main(argv: list[str]) -> None:
    variant, events, tmp = argv[0], int(argv[1]), Path(argv[2])
    kafka, topics = KafkaSettings(), TopicSettings()
    if variant == "aiokafka":
        asyncio.run(_aiokafka(kafka, topics, events))
    elif variant in ("faust_count", "faust_table"):
        _faust_baseline(kafka, topics, events, tmp, table=variant == "faust_table")
    elif variant in ("sessions", "sessions_recent"):
        _sessions(kafka, topics, events, tmp, recent=variant == "sessions_recent")
    else:
        raise SystemExit(f"unknown variant {variant!r}; expected one of {VARIANTS}")


if __name__ == "__main__":
    main(sys.argv[1:])
