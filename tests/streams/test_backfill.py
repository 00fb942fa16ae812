"""``aigq backfill`` against the real broker: exact for its range, idempotent, rate-limited."""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from typing import Any

import pytest
from typer.testing import CliRunner

from aigq.datasets import Malformed
from aigq.datasets.synthetic import DAY_MS, SyntheticConfig, generate
from aigq.settings import KafkaSettings, TopicSettings
from shell.cli import app
from streams.backfill import backfill, changelog_topic, read_changelog
from streams.replay import KafkaSink, ReplaySettings, replay
from streams.session import Session
from streams.settings import StreamSettings

pytestmark = pytest.mark.integration
WORLD = SyntheticConfig(users=25, days=4, seed=8)
SINCE, UNTIL = WORLD.start_ms + DAY_MS, WORLD.start_ms + 3 * DAY_MS


@pytest.fixture
def produced(kafka: KafkaSettings, topics: TopicSettings) -> list[Any]:
    items = [i for i in generate(WORLD) if not isinstance(i, Malformed)]
    with KafkaSink(kafka, ReplaySettings(linger_ms=5)) as sink:
        replay(items, sink, topics)  # record timestamps are the events' times
    return items


def _counts(items: list[Any]) -> dict[str, Counter[str]]:
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for item in items:
        if SINCE <= item.ts < UNTIL:
            counts[item.user_id][item.type] += 1
    return counts


def test_backfill_applies_exactly_its_range_and_twice_is_once(
    kafka: KafkaSettings, topics: TopicSettings, produced: list[Any]
) -> None:
    app_id = f"bf-{uuid.uuid4().hex[:6]}"
    expected = _counts(produced)
    in_range = sum(sum(c.values()) for c in expected.values())
    assert 0 < in_range < len(produced)

    first = backfill(kafka, topics, StreamSettings(), SINCE, UNTIL, app_id, generate=False)
    assert (first.applied, first.skipped, first.requests) == (in_range, 0, 0)
    assert first.outside > 0  # read from the first offset at `since`, stopped filtering at `until`
    states = read_changelog(kafka, changelog_topic(app_id))
    sessions = {user: Session.from_bytes(data) for user, data in states.items()}
    assert {u: Counter(s.counts) for u, s in sessions.items()} == expected

    second = backfill(kafka, topics, StreamSettings(), SINCE, UNTIL, app_id, generate=False)
    assert (second.applied, second.skipped) == (0, in_range)
    assert read_changelog(kafka, changelog_topic(app_id)) == states


def test_backfill_requests_go_through_the_governor(
    kafka: KafkaSettings, topics: TopicSettings, produced: list[Any]
) -> None:
    report = backfill(
        kafka,
        topics,
        StreamSettings(),
        SINCE,
        UNTIL,
        f"bf-{uuid.uuid4().hex[:6]}",
        generate=True,
        max_regenerations_per_s=2,
        flush_events=100,
    )
    fired = sum(
        report.outcomes[r] for r in ("cold_start", "drift", "new_category", "novel_search", "stale")
    )
    assert fired > report.requests > 0
    assert report.requests <= 2 + 2 * report.elapsed_s + 1  # burst + rate x time
    assert report.outcomes["deferred"] > 0
    assert (
        report.outcomes["deferred"]
        == report.outcomes["fired_deferred"] + report.outcomes["expired"]
        or report.outcomes["expired"] > 0
    )


def test_cli_backfill(
    kafka: KafkaSettings,
    topics: TopicSettings,
    produced: list[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIGQ_KAFKA_BOOTSTRAP_SERVERS", kafka.bootstrap_servers)
    monkeypatch.setenv("AIGQ_TOPICS_PREFIX", topics.prefix)
    monkeypatch.setenv("AIGQ_TOPICS_PARTITIONS", str(topics.partitions))
    args = ["backfill", "--since", "2026-01-02", "--until", "2026-01-04T00:00:00+00:00"]
    result = CliRunner().invoke(
        app, [*args, "--no-generate", "--app-id", f"bf-{uuid.uuid4().hex[:6]}"]
    )
    assert result.exit_code == 0, result.output
    assert (
        f"applied {sum(sum(c.values()) for c in _counts(produced).values()):,} events"
        in result.output
    )
    bad = CliRunner().invoke(app, ["backfill", "--since", "2026-01-04", "--until", "2026-01-02"])
    assert bad.exit_code == 2
    assert "must be after" in bad.output


def test_backfill_to_beyond_the_data_ends_when_the_topics_go_quiet(
    kafka: KafkaSettings, topics: TopicSettings, produced: list[Any]
) -> None:
    report = backfill(
        kafka,
        topics,
        StreamSettings(),
        SINCE,
        SINCE + 30 * DAY_MS,
        f"bf-{uuid.uuid4().hex[:6]}",
        False,
    )
    assert report.applied == sum(1 for item in produced if item.ts >= SINCE)
