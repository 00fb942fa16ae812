"""The session processor fed plain lists of raw records: state, requests, replays, dead letters."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from aigq.codec import encode
from aigq.datasets import Malformed
from aigq.datasets.synthetic import SyntheticConfig, generate
from aigq.errors import EventError
from aigq.events import MAX_QUERY_CHARS, RegenerationRequest, SearchEvent
from streams.processor import SessionProcessor, fast_fields, full_fields
from streams.session import Session, SessionConfig
from streams.triggers import CostGovernor, TriggerPolicy

TS = 1_767_225_600_000
WALL = 1_800_000_000_000


def _processor(store: dict[str, bytes] | None = None, **kwargs: Any) -> SessionProcessor:
    store = store if store is not None else {}
    return SessionProcessor(
        SessionConfig(), TriggerPolicy(), load=store.get, wall_ms=lambda: WALL, **kwargs
    )


def _records(users: int = 12, days: int = 2) -> list[tuple[str, int, bytes]]:
    """Synthetic events as (topic, offset, value), offsets counted per topic."""
    offsets: dict[str, int] = {}
    out = []
    for item in generate(SyntheticConfig(users=users, days=days, seed=4)):
        assert not isinstance(item, Malformed)
        topic = f"t.{item.type}"
        offsets[topic] = offsets.get(topic, -1) + 1
        out.append((topic, offsets[topic], encode(item)))
    return out


def _run(processor: SessionProcessor, records: list[tuple[str, int, bytes]]) -> None:
    for topic, offset, value in records:
        processor.process(topic, 0, offset, value)


def test_every_event_counts_once_and_versions_match() -> None:
    records = _records()
    processor = _processor()
    _run(processor, records)
    drained = processor.drain()
    total = 0
    for user, data in drained.states.items():
        session = Session.from_bytes(data)
        assert session.user_id == user
        assert session.version == sum(session.counts.values())
        total += session.version
    assert total == len(records)
    assert processor.drain().states == {}  # drained: nothing dirty any more


def test_requests_are_valid_records_one_per_user_per_flush() -> None:
    processor = _processor()
    _run(processor, _records())
    drained = processor.drain()
    assert drained.requests
    users = [user for user, _ in drained.requests]
    assert len(users) == len(set(users))
    for user, data in drained.requests:
        request = RegenerationRequest.model_validate_json(data)
        state = Session.from_bytes(drained.states[user])
        assert request.user_id == user
        assert request.version <= state.version
        assert request.created_ts == WALL
        assert 0 < len(request.profile) <= 16
        assert sum(w for _, w in request.profile) == pytest.approx(1.0)


def test_replayed_records_are_skipped_exactly() -> None:
    records = _records()
    clean = _processor()
    _run(clean, records)
    expected = clean.drain().states

    # Crash after the first half was flushed: the store has it, then everything is redelivered.
    store: dict[str, bytes] = {}
    first = _processor(store)
    _run(first, records[: len(records) // 2])
    store.update(first.drain().states)
    second = _processor(store)
    _run(second, records)
    assert second.outcomes["replayed"] == len(records) // 2
    store.update(second.drain().states)
    assert store == expected


def test_generation_off_still_rebuilds_state() -> None:
    processor = _processor(generate=False)
    _run(processor, _records(users=3))
    drained = processor.drain()
    assert drained.requests == []
    assert drained.states


def test_governor_drops_the_smallest_shifts() -> None:
    processor = _processor(governor=CostGovernor(rate_per_s=1, burst=2, clock=lambda: 0.0))
    _run(processor, _records())
    drained = processor.drain()
    assert len(drained.requests) == 2
    assert drained.governed > 0
    assert processor.outcomes["governed"] == drained.governed


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"{not json", "not valid JSON"),
        (b'{"type": "search", "user_id": "u", "ts": 1767225600, "query": "q"}', "epoch seconds"),
        (b'{"type": "search", "user_id": "u", "ts": 1767225600000, "query": "  "}', "at least 1"),
        (b'{"type": "refund", "user_id": "u", "ts": 1767225600000}', "unknown event type"),
        (b"\xff\xfe", "not valid JSON"),
        (None, "no value"),
    ],
)
def test_bad_records_become_dead_letters_with_reason_and_origin(
    value: bytes | None, reason: str
) -> None:
    processor = _processor()
    processor.process("t.search", 3, 17, value)
    [letter] = [orjson.loads(d) for d in processor.drain().dead_letters]
    assert reason in letter["reason"]
    assert letter["origin"] == "t.search/3@17"
    assert processor.outcomes["dead_letter"] == 1
    assert processor.sessions == {}


def test_dead_letter_keeps_the_original_bytes() -> None:
    processor = _processor()
    processor.process("t.search", 0, 1, b"\xff\xfe not utf-8")
    [letter] = [orjson.loads(d) for d in processor.drain().dead_letters]
    assert letter["encoding"] == "base64"


def test_oversized_records_are_rejected_by_the_limit() -> None:
    processor = _processor(max_event_bytes=100)
    big = encode(SearchEvent(user_id="u", ts=TS, query="q" * 200))
    processor.process("t.search", 0, 1, big)
    [letter] = [orjson.loads(d) for d in processor.drain().dead_letters]
    assert letter["reason"] == f"payload is {len(big)} bytes; the limit is 100"
    assert letter["truncated"] is False and len(letter["payload"]) == 100


def test_fast_path_agrees_with_the_schema_on_hard_cases() -> None:
    cases: list[dict[str, Any]] = [
        {"type": "search", "user_id": " u ", "ts": TS, "query": " q "},
        {"type": "search", "user_id": "u", "ts": TS, "query": "a\x00b"},
        {"type": "search", "user_id": "u", "ts": TS, "query": "q" * (MAX_QUERY_CHARS + 1)},
        {"type": "search", "user_id": "u", "ts": True, "query": "q"},
        {"type": "search", "user_id": "u", "ts": TS, "query": "q", "extra": {"x": 1}},
        {"type": "click", "user_id": "u", "ts": TS, "item_id": "i", "item_text": "t"},
        {"type": "click", "user_id": "u", "ts": TS, "item_id": "i", "item_text": "t",
         "category": [" Home ", "Lamps"]},
        {"type": "click", "user_id": "u", "ts": TS, "item_id": "", "item_text": "t"},
        {"type": "click", "user_id": "u", "ts": TS, "item_id": "i", "item_text": "t",
         "category": ["ok", 3]},
    ]  # fmt: skip
    for case in cases:
        data = orjson.dumps(case)
        fast = fast_fields(case)
        try:
            slow = full_fields(data)
        except EventError:
            slow = None
        if fast is not None:  # whatever the fast path takes, the schema takes the same way
            assert slow is not None
            assert (fast.kind, fast.user_id, fast.ts, fast.text, list(fast.category)) == (
                slow.kind,
                slow.user_id,
                slow.ts,
                slow.text,
                list(slow.category),
            )


def test_forget_keeps_dirty_sessions() -> None:
    processor = _processor()
    _run(processor, _records(users=3, days=1))
    processor.forget()
    assert len(processor.sessions) == len(processor.dirty) > 0
    processor.drain()
    processor.forget()
    assert processor.sessions == {}


def test_recent_triggers_are_what_users_searched_and_clicked_newest_time_each() -> None:
    from aigq.events import ClickEvent, HintClickEvent

    events = [
        SearchEvent(user_id="a", ts=TS, query="running shoes"),
        ClickEvent(
            user_id="a",
            ts=TS + 1,
            item_id="sku-1",
            item_text="Pegasus 40",
            category=("Sports", "Running"),
        ),
        SearchEvent(user_id="a", ts=TS + 2, query="running shoes"),  # again: the newer time
        HintClickEvent(
            user_id="b", ts=TS + 3, request_id="r1", query="trail shoes", source="u2q", position=0
        ),
        ClickEvent(user_id="b", ts=TS + 4, item_id="sku-9", item_text="no category"),
    ]
    processor = _processor(recent=True)
    for offset, event in enumerate(events):
        processor.process(f"t.{event.type}", 0, offset, encode(event))
    assert sorted(processor.drain().recent) == sorted(
        [
            ("a", "query", "running shoes", TS + 2),
            ("a", "item", "sku-1", TS + 1),
            ("a", "category", "Running", TS + 1),
            ("b", "query", "trail shoes", TS + 3),
            ("b", "item", "sku-9", TS + 4),
        ]
    )
    assert processor.drain().recent == []  # a drain starts clean

    quiet = _processor()  # off by default: nothing is collected
    quiet.process("t.search", 0, 0, encode(events[0]))
    assert quiet.drain().recent == []


def test_requests_carry_the_kafka_timestamp_of_the_record_that_fired_them() -> None:
    processor = _processor()
    search = SearchEvent(user_id="u1", ts=TS, query="trail shoes")
    processor.process("t.search", 0, 0, encode(search), record_ts=WALL - 40)
    ((_, first),) = processor.drain().requests
    assert RegenerationRequest.model_validate_json(first).ingest_ts == WALL - 40
    later = SearchEvent(user_id="u1", ts=TS + 3_600_000, query="rain jacket")
    processor.process("t.search", 0, 1, encode(later))  # no timestamp: none is invented
    ((_, second),) = processor.drain().requests
    assert RegenerationRequest.model_validate_json(second).ingest_ts is None
