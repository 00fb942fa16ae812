"""Read back what the loop holds: the session worker's per-user counts from its changelog,
records of a topic (dead letters, requests), and the processes' counters from ``/metrics``.

The changelog is read as the SIGKILL recovery test reads it (tests/streams/worker_proc.py):
every record from the start to the end offsets, the last state per user, source-partition
marks skipped. A session's ``version`` is the number of events it applied.
"""

from __future__ import annotations

import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Mapping
from typing import TypeVar

import orjson
from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from prometheus_client.parser import text_string_to_metric_families

from aigq.settings import KafkaSettings
from shell.e2e.drive import ANSWERED
from streams.resets import is_mark
from streams.session import Session

T = TypeVar("T")


def read_topic(kafka: KafkaSettings, topic: str, timeout_s: float = 20.0) -> list[ConsumerRecord]:
    """Every record of ``topic`` up to its end offsets now (none when it does not exist)."""
    consumer = KafkaConsumer(**kafka.kafka_python_config(), enable_auto_commit=False)
    try:
        parts = [
            TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        if not parts:
            return []
        consumer.assign(parts)
        consumer.seek_to_beginning()
        ends = consumer.end_offsets(parts)
        records: list[ConsumerRecord] = []
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < ends[tp] for tp in parts) and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=300).values():
                records.extend(batch)
        # The end offsets tansu reports stop at its last batch's start + 1 (docs/streams.md):
        # what the last fetch held past them is read too, until a poll brings nothing.
        while time.monotonic() < deadline and (got := consumer.poll(timeout_ms=300)):
            for batch in got.values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


def latest_states(kafka: KafkaSettings, changelog: str) -> tuple[dict[str, Session], bool]:
    """The last state per user in a changelog, and whether versions only ever grew."""
    states: dict[str, Session] = {}
    monotonic = True
    for record in read_topic(kafka, changelog):
        if is_mark(record.key) or record.value is None:
            continue
        session = Session.from_bytes(record.value)
        before = states.get(session.user_id)
        monotonic &= before is None or session.version >= before.version
        states[session.user_id] = session
    return states, monotonic


def changelog_name(app_id: str) -> str:
    return f"{app_id}-sessions-changelog"


def wait_progress(
    read: Callable[[], T],
    done: Callable[[T], bool],
    progress: Callable[[T], int],
    timeout_s: float,
    stalled_s: float = 15.0,
) -> T:
    """Poll ``read`` every second until ``done``, ``timeout_s`` passes, or ``progress`` has not
    moved for ``stalled_s`` (a loop that lost events stops counting: no need to wait it out).
    Returns the last reading."""
    deadline = time.monotonic() + timeout_s
    value = read()
    moved_at, last = time.monotonic(), progress(value)
    while not done(value):
        now = time.monotonic()
        if now >= deadline or now - moved_at >= stalled_s:
            break
        time.sleep(1.0)
        value = read()
        if progress(value) != last:
            moved_at, last = time.monotonic(), progress(value)
    return value


def wait_counted(
    kafka: KafkaSettings, changelog: str, want: Mapping[str, int], timeout_s: float
) -> tuple[dict[str, int], bool]:
    """Poll the changelog until every user in ``want`` counts at least as many events (or the
    time is up, or the count stalls); the versions then, and whether they only ever grew."""

    def read() -> tuple[dict[str, int], bool]:
        states, monotonic = latest_states(kafka, changelog)
        return {user: s.version for user, s in states.items()}, monotonic

    return wait_progress(
        read,
        lambda got: all(got[0].get(user, 0) >= n for user, n in want.items()),
        lambda got: sum(got[0].values()),
        timeout_s,
    )


def dead_letter_origins(kafka: KafkaSettings, topic: str) -> Counter[str]:
    """How often each ``topic/partition@offset`` was dead-lettered."""
    return Counter(
        str(orjson.loads(r.value)["origin"]) for r in read_topic(kafka, topic) if r.value
    )


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                total += sample.value
    return total


def worker_applied(text: str) -> int:
    """Events the worker applied by its /metrics: records it took, less those it dead-lettered
    or skipped as already applied."""
    taken = metric(text, "aigq_stream_events_total")
    skipped = sum(
        metric(text, "aigq_stream_decisions_total", outcome=o)
        for o in ("dead_letter", "replayed", "duplicate")
    )
    return int(taken - skipped)


def generator_answered(text: str) -> int:
    """Requests the generator answered: written, refused, superseded or dead-lettered."""
    return int(sum(metric(text, f"aigq_generate_{name}_total") for name in ANSWERED))


def scrape(url: str, timeout_s: float = 2.0) -> str | None:
    """A /metrics page, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as reply:
            return str(reply.read().decode())
    except OSError:
        return None
