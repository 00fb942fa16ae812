"""The replay loop with a plain list as its sink: keys, topics, dead letters, limits, pacing."""

from __future__ import annotations

import orjson
import pytest

from aigq.codec import decode
from aigq.datasets import Malformed
from aigq.datasets.synthetic import SyntheticConfig, generate
from aigq.events import ClickEvent, SearchEvent
from aigq.settings import TopicSettings
from streams.replay import Pacer, Shard, parse_speed, replay

TS = 1_767_225_600_000
TOPICS = TopicSettings(prefix="r")


class ListSink:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes]] = []
        self.stamps: list[int | None] = []
        self.flushes = 0

    def send(
        self, topic: str, key: bytes | None, value: bytes, timestamp_ms: int | None = None
    ) -> None:
        self.sent.append((topic, key, value))
        self.stamps.append(timestamp_ms)

    def flush(self) -> None:
        self.flushes += 1


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_events_go_to_their_kind_topic_keyed_by_user() -> None:
    sink = ListSink()
    items = list(generate(SyntheticConfig(users=5, days=2)))
    report = replay(items, sink, TOPICS)
    assert report.events == len(items) == len(sink.sent)
    assert sink.flushes == 1
    for (topic, key, value), item in zip(sink.sent, items, strict=True):
        assert not isinstance(item, Malformed)
        assert topic == f"r.{item.type}"
        assert key == item.user_id.encode()
        assert decode(value) == item
    assert sum(report.produced.values()) == len(items)
    assert report.last_ts == items[-1].ts
    assert sink.stamps == [item.ts for item in items]  # record timestamps are event times
    replay(items, no_stamps := ListSink(), TOPICS, event_time=False)
    assert set(no_stamps.stamps) == {None}


def test_malformed_items_become_dead_letters_and_do_not_count_as_events() -> None:
    sink = ListSink()
    items = [
        SearchEvent(user_id="u", ts=TS, query="q"),
        Malformed("aol:1.txt:3", "bad\tline", "bad timestamp 'x'", TS),
        ClickEvent(user_id="u", ts=TS + 1, item_id="i", item_text="t"),
    ]
    report = replay(items, sink, TOPICS)
    assert (report.events, report.malformed, report.produced["dead_letter"]) == (2, 1, 1)
    topic, key, value = sink.sent[1]
    letter = orjson.loads(value)
    assert (topic, key) == ("r.dead_letter", None)
    assert letter["origin"] == "aol:1.txt:3"
    assert letter["payload"] == "bad\tline"
    assert letter["reason"] == "bad timestamp 'x'"


def test_limit_counts_events_only() -> None:
    sink = ListSink()
    items = [SearchEvent(user_id="u", ts=TS + i, query=f"q{i}") for i in range(10)]
    items.insert(2, Malformed("x", "", "bad", TS))  # type: ignore[arg-type]
    report = replay(items, sink, TOPICS, limit=4)
    assert report.events == 4
    assert report.malformed == 1


def test_pacing_follows_log_time_at_the_given_speed() -> None:
    clock = FakeClock()
    items = [SearchEvent(user_id="u", ts=TS + ms, query="q") for ms in (0, 60_000, 60_000, 180_000)]
    report = replay(items, ListSink(), TOPICS, speed=60.0, clock=clock, sleep=clock.sleep)
    # 60x: one log minute per wall second; equal timestamps do not wait.
    assert clock.slept == pytest.approx([1.0, 2.0])
    assert report.elapsed_s == pytest.approx(3.0)


def test_pacer_does_not_wait_when_behind() -> None:
    pacer = Pacer(speed=1.0)
    assert pacer.delay(TS, now_s=0.0) == 0.0
    assert pacer.delay(TS + 1_000, now_s=5.0) == 0.0  # already late
    assert pacer.delay(TS + 10_000, now_s=5.0) == pytest.approx(5.0)
    assert Pacer(speed=None).delay(TS + 10**9, now_s=0.0) == 0.0


def test_progress_callback_sees_growing_counts() -> None:
    seen: list[int] = []
    items = [SearchEvent(user_id="u", ts=TS + i, query="q") for i in range(25)]
    replay(
        items, ListSink(), TOPICS, on_progress=lambda r: seen.append(r.events), progress_every=10
    )
    assert seen == [10, 20]


@pytest.mark.parametrize(
    ("text", "speed"), [("max", None), (" MAX ", None), ("60", 60.0), ("0.5", 0.5)]
)
def test_parse_speed(text: str, speed: float | None) -> None:
    assert parse_speed(text) == speed


@pytest.mark.parametrize("text", ["0", "-1", "fast", "inf", "nan", ""])
def test_parse_speed_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="speed must be"):
        parse_speed(text)


def test_a_stream_replayed_twice_counts_once_in_the_sessions() -> None:
    from streams.processor import SessionProcessor
    from streams.session import SessionConfig
    from streams.triggers import TriggerPolicy

    items = [
        i
        for i in generate(SyntheticConfig(users=6, days=2, seed=3))
        if not isinstance(i, Malformed)
    ]
    first, second, sharded = ListSink(), ListSink(), ListSink()
    replay(items, first, TOPICS, stream="synthetic-3")
    replay(items, second, TOPICS, stream="synthetic-3")
    for index in range(2):  # two producers, each its own users: the same ids
        replay(items, sharded, TOPICS, stream="synthetic-3", shard=Shard(index, 2))

    def ids(sink: ListSink) -> list[tuple[str, str]]:  # an id counts within its user
        return [(e["user_id"], e["event_id"]) for e in (orjson.loads(v) for _, _, v in sink.sent)]

    assert ids(first) == ids(second)
    assert sorted(ids(first)) == sorted(ids(sharded))
    assert len(set(ids(first))) == len(items)
    processor = SessionProcessor(SessionConfig(), TriggerPolicy(), load=lambda _: None)
    for offset, (topic, _, value) in enumerate(first.sent + second.sent):
        processor.process(topic, 0, offset, value)
    assert sum(s.version for s in processor.sessions.values()) == len(items)
    assert processor.outcomes["duplicate"] == len(items)


def test_a_replay_counts_once_whatever_order_the_worker_reads_its_topics_in() -> None:
    """Each event type has a topic of its own, and a worker reads its topics independently: a
    user's click can be applied before their earlier search. Sequence numbers that counted a
    user's events across types made that search look like a repeat, and it was dropped."""
    from streams.processor import SessionProcessor
    from streams.session import SessionConfig
    from streams.triggers import TriggerPolicy

    items = [
        i
        for i in generate(SyntheticConfig(users=6, days=2, seed=3))
        if not isinstance(i, Malformed)
    ]
    sink = ListSink()
    replay(items, sink, TOPICS, stream="synthetic-3")
    replay(items, sink, TOPICS, stream="synthetic-3")  # and once more: all repeats
    # One topic after another (as a restarted worker may find them), each in its own order.
    by_topic = sorted(enumerate(sink.sent), key=lambda kv: (kv[1][0], kv[0]))
    assert len({topic for _, (topic, _, _) in by_topic}) > 1
    processor = SessionProcessor(SessionConfig(), TriggerPolicy(), load=lambda _: None)
    for offset, (topic, _, value) in by_topic:
        processor.process(topic, 0, offset, value)
    assert sum(s.version for s in processor.sessions.values()) == len(items)
    assert processor.outcomes["duplicate"] == len(items)
