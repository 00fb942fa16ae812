"""Replay into the real local broker and read it back: counts, keys, per-user order, limits."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from aigq.codec import decode
from aigq.datasets import Malformed
from aigq.datasets.synthetic import SyntheticConfig, generate
from aigq.errors import AigqError
from aigq.settings import KafkaSettings, TopicSettings
from shell.cli import app
from streams.replay import ReplaySettings
from streams.replay_workers import ReplayJob, SourceSpec, replay_with_workers

pytestmark = pytest.mark.integration

SYNTHETIC = SyntheticConfig(users=25, days=2, malformed_rate=0.02, seed=11)
EVENT_KINDS = ("search", "click", "hint_exposure", "hint_click")


def _with_ids(events: list[Any]) -> list[Any]:
    """The events as the replay sends them: each with its id ``<stream>/<type>#<n>``, ``n``
    counting per user and type."""
    numbers: Counter[tuple[str, str]] = Counter()
    out = []
    for event in events:
        n = numbers[event.user_id, event.type]
        out.append(event.model_copy(update={"event_id": f"synthetic-11/{event.type}#{n}"}))
        numbers[event.user_id, event.type] += 1
    return out


def _job(kafka: KafkaSettings, topics: TopicSettings, limit: int | None = None) -> ReplayJob:
    spec = SourceSpec("synthetic", None, ReplaySettings().data_dir, SYNTHETIC)
    return ReplayJob(spec, kafka, ReplaySettings(linger_ms=5), topics, speed=None, limit=limit)


@pytest.mark.parametrize("workers", [1, 3])
def test_replayed_events_arrive_whole_keyed_and_in_user_order(
    kafka: KafkaSettings, topics: TopicSettings, read_topics: Any, workers: int
) -> None:
    source = list(generate(SYNTHETIC))
    events = _with_ids([i for i in source if not isinstance(i, Malformed)])
    malformed = len(source) - len(events)
    assert malformed > 0

    report, first_error = replay_with_workers(_job(kafka, topics), workers)
    assert (report.events, report.malformed, report.failed) == (len(events), malformed, 0)
    assert first_error is None

    records = read_topics([topics.name(k) for k in EVENT_KINDS], len(events))
    assert len(records) == len(events)
    by_user: dict[str, list[Any]] = defaultdict(list)
    partitions: dict[str, set[int]] = defaultdict(set)
    for record in records:
        event = decode(record.value)
        assert record.key == event.user_id.encode()
        assert record.topic == topics.name(event.type)
        by_user[event.user_id].append((record.timestamp, event))
        partitions[event.user_id].add(record.partition)
    for user, got in by_user.items():
        want = [e for e in events if e.user_id == user]
        # Records of one kind come back in offset order per partition; across the four
        # topics, order them by the event time they carry to compare with the source.
        assert sorted((e for _, e in got), key=lambda e: e.ts) == want
    assert all(len(p) <= len(EVENT_KINDS) for p in partitions.values())

    letters = read_topics([topics.name("dead_letter")], malformed)
    assert len(letters) == malformed
    assert all(orjson.loads(r.value)["reason"] == "ts: not an integer" for r in letters)


def test_each_topic_partition_keeps_the_user_order(
    kafka: KafkaSettings, topics: TopicSettings, read_topics: Any
) -> None:
    replay_with_workers(_job(kafka, topics), workers=2)
    records = read_topics([topics.name("click")], 1)
    last: dict[str, int] = {}
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        event = decode(record.value)
        assert event.ts > last.get(event.user_id, 0)
        last[event.user_id] = event.ts


def test_limit_is_exact_across_workers(
    kafka: KafkaSettings, topics: TopicSettings, read_topics: Any
) -> None:
    report, _ = replay_with_workers(_job(kafka, topics, limit=321), workers=3)
    assert report.events == 321
    records = read_topics([topics.name(k) for k in EVENT_KINDS], 321)
    first = _with_ids([e for e in generate(SYNTHETIC) if not isinstance(e, Malformed)][:321])
    assert Counter(r.value for r in records) == Counter(
        orjson.dumps(e.model_dump(mode="json", exclude_none=True)) for e in first
    )


def test_cli_replay_prints_the_rate(
    kafka: KafkaSettings, topics: TopicSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIGQ_KAFKA_BOOTSTRAP_SERVERS", kafka.bootstrap_servers)
    args = ["replay", "synthetic", "--topic-prefix", topics.prefix, "--users", "5", "--days", "1"]
    result = CliRunner().invoke(app, [*args, "--limit", "40", "--workers", "2"])
    assert result.exit_code == 0, result.output
    assert "40 events in" in result.output
    assert "events/s (2 producers)" in result.output


def test_cli_rejects_unknown_sources_and_speeds() -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["replay", "kaggle"])
    assert result.exit_code == 2
    assert "unknown source" in result.output
    assert runner.invoke(app, ["replay", "aol", "--speed", "fast"]).exit_code == 2


def test_unreachable_broker_is_one_clear_line_and_exit_1() -> None:
    # In a subprocess: kafka-python drops the sockets of its failed connection attempts without
    # closing them, and their ResourceWarnings would land in whichever test runs next.
    env = {**os.environ, "AIGQ_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    env["AIGQ_KAFKA_BOOTSTRAP_TIMEOUT_MS"] = "300"
    result = subprocess.run(
        [sys.executable, "-m", "shell", "replay", "synthetic", "--users", "2", "--workers", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "error: Kafka at 127.0.0.1:1 does not answer" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_worker_that_fails_is_reported_by_the_parent(
    kafka: KafkaSettings, topics: TopicSettings, tmp_path: Path
) -> None:
    spec = SourceSpec("aol", tmp_path / "missing", tmp_path, SYNTHETIC)
    job = ReplayJob(spec, kafka, ReplaySettings(), topics, speed=None, limit=None)
    with pytest.raises(AigqError, match="neither a folder nor a file"):
        replay_with_workers(job, workers=2)
