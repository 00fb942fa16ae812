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
from streams.processor import SessionProcessor, event_fields
from streams.session import Session, SessionConfig
from streams.triggers import CostGovernor, TriggerPolicy

TS = 1_767_225_600_000
WALL = 1_800_000_000_000


def _processor(store: dict[str, bytes] | None = None, **kwargs: Any) -> SessionProcessor:
    store = store if store is not None else {}
    kwargs.setdefault("wall_ms", lambda: WALL)
    return SessionProcessor(SessionConfig(), TriggerPolicy(), load=store.get, **kwargs)


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


def _clocked(**kwargs: Any) -> tuple[SessionProcessor, list[int]]:
    """A processor whose wall clock the test moves (``wall[0]``)."""
    wall = [WALL]
    return _processor(wall_ms=lambda: wall[0], **kwargs), wall


def _search_at(user: str, ts: int, query: str, offset: int) -> tuple[str, int, bytes]:
    event = SearchEvent(user_id=user, ts=ts, query=query)
    return ("t.search", offset, encode(event))


def test_what_the_budget_cannot_pay_waits_unrecorded_and_fires_later_with_the_newest_state() -> (
    None
):
    processor, wall = _clocked()
    users = [f"u{i}" for i in range(5)]
    _run(processor, [_search_at(u, TS, "running shoes", i) for i, u in enumerate(users)])
    first = processor.drain(allow=2)
    assert len(first.requests) == 2 and first.deferred == 3
    assert processor.outcomes["deferred"] == 3
    fired = {u for u, _ in first.requests}
    waiting = [u for u in users if u not in fired]
    # A deferred trigger is not recorded in the state written: its baseline is the old one.
    for user in waiting:
        assert Session.from_bytes(first.states[user]).trigger_ts is None
    assert all(Session.from_bytes(first.states[u]).trigger_ts == TS for u in fired)

    # One of them searches again: judged against the old baseline, it fires again (a cold
    # start still) and replaces its pending trigger; the next drain pays for all three.
    again = waiting[0]
    processor.process("t.search", 0, 9, _search_at(again, TS + 60_000, "trail socks", 9)[2])
    wall[0] += 1_000
    second = processor.drain(allow=10)
    assert sorted(u for u, _ in second.requests) == sorted(waiting)
    assert processor.outcomes["fired_deferred"] == 3 and not processor.pending
    requests = {u: RegenerationRequest.model_validate_json(r) for u, r in second.requests}
    newest = requests[again]
    assert newest.version == 2 and newest.watermark_ts == TS + 60_000  # the newest state
    assert [b[2] for b in newest.recent] == ["running shoes", "trail socks"]
    assert Session.from_bytes(second.states[again]).trigger_ts == TS + 60_000  # recorded now


def test_a_trigger_waiting_past_defer_max_is_given_up_and_counted() -> None:
    processor, wall = _clocked(defer_max_ms=5_000)
    _run(processor, [_search_at("late", TS, "running shoes", 0)])
    assert processor.drain(allow=0).deferred == 1
    wall[0] += 6_000
    drained = processor.drain(allow=10)
    assert drained.requests == [] and drained.expired == 1
    assert processor.outcomes["expired"] == 1 and not processor.pending
    # the user's next behaviour triggers again (the baseline never moved)
    processor.process("t.search", 0, 1, _search_at("late", TS + 1, "wool socks", 1)[2])
    assert [u for u, _ in processor.drain(allow=10).requests] == ["late"]


def test_a_trigger_that_fired_again_while_deferred_leaves_no_trace_when_given_up() -> None:
    processor, wall = _clocked(defer_max_ms=5_000)
    _run(processor, [_search_at("again", TS, "running shoes", 0)])
    assert processor.drain(allow=0).deferred == 1
    # fires again (judged against the old baseline): the session records it for now
    processor.process("t.search", 0, 1, _search_at("again", TS + 1, "wool socks", 1)[2])
    assert processor.sessions["again"].trigger_ts == TS + 1
    wall[0] += 6_000
    drained = processor.drain(allow=0)
    assert drained.expired == 1 and not processor.pending
    assert Session.from_bytes(drained.states["again"]).trigger_ts is None  # put back
    assert processor.give_up_deferred() == 0


def test_the_local_governor_fires_the_largest_shifts_and_defers_the_rest() -> None:
    processor = _processor(governor=CostGovernor(rate_per_s=1, burst=2, clock=lambda: 0.0))
    _run(processor, _records())
    drained = processor.drain()
    assert len(drained.requests) == 2
    assert drained.deferred > 0
    assert processor.outcomes["deferred"] == drained.deferred == len(processor.pending)
    assert processor.give_up_deferred() == drained.deferred
    assert processor.outcomes["expired"] == drained.deferred


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
    # The payload is cut to the limit, and the letter says so.
    assert letter["truncated"] is True and len(letter["payload"]) == 100


def test_one_decoder_what_the_schema_rejects_is_a_dead_letter_and_nothing_else() -> None:
    cases: list[dict[str, Any]] = [
        {"type": "search", "user_id": " u ", "ts": TS, "query": " q "},
        {"type": "search", "user_id": "u", "ts": TS, "query": "a\x00b"},
        {"type": "search", "user_id": "u", "ts": TS, "query": "q" * (MAX_QUERY_CHARS + 1)},
        {"type": "search", "user_id": "u", "ts": True, "query": "q"},
        {"type": "search", "user_id": "u", "ts": TS, "query": "0\x1f"},  # pydantic keeps U+001F
        {"type": "search", "user_id": "u", "ts": TS, "query": "q", "extra": {"x": 1}},
        {"type": "click", "user_id": "u", "ts": TS, "item_id": "i", "item_text": "t"},
        {"type": "click", "user_id": "u", "ts": TS, "item_id": "i", "item_text": "t",
         "category": [" Home ", "Lamps"]},
        {"type": "click", "user_id": "u", "ts": TS, "item_id": "", "item_text": "t"},
        {"type": "click", "user_id": "u", "ts": TS, "item_id": "i", "item_text": "t",
         "category": ["ok", 3]},
    ]  # fmt: skip
    for offset, case in enumerate(cases):
        data = orjson.dumps(case)
        try:
            event_fields(data)
            accepted = True
        except EventError:
            accepted = False
        processor = _processor()
        outcome = processor.process("t.search", 0, offset, data)
        assert (outcome == "dead_letter") is not accepted, (case, outcome)
        assert len(processor.drain().dead_letters) == (0 if accepted else 1)


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


# --- issue 15: nothing lost, nothing poisoned ------------------------------------------------

DAY = 86_400_000


def _search(user: str, ts: int, query: str, **extra: Any) -> bytes:
    return orjson.dumps({"type": "search", "user_id": user, "ts": ts, "query": query, **extra})


def _version(processor: SessionProcessor, user: str) -> int:
    return processor.session(user).version


def test_offsets_are_per_partition_so_a_record_in_another_partition_is_applied() -> None:
    # A record with a null key or another user's key lands in another partition, at offsets
    # that have nothing to do with this user's: before, the per-topic offset skipped it.
    processor = _processor()
    assert processor.process("t.search", 3, 500, _search("u1", TS, "first")) != "replayed"
    assert processor.process("t.search", 5, 10, _search("u1", TS + 1, "second")) != "replayed"
    assert processor.process("t.search", 3, 500, _search("u1", TS, "first")) == "replayed"
    assert processor.process("t.search", 5, 10, _search("u1", TS + 1, "second")) == "replayed"
    assert _version(processor, "u1") == 2


def test_a_reset_partition_is_a_new_incarnation_whose_records_are_applied() -> None:
    processor = _processor()
    for offset in range(100, 110):
        processor.process("t.search", 0, offset, _search("u1", TS + offset, f"q {offset}"))
    assert processor.process("t.search", 0, 3, _search("u1", TS + 200, "new")) == "replayed"
    processor.epochs["t.search/0"] = 1  # the worker found the partition reset
    assert processor.process("t.search", 0, 3, _search("u1", TS + 200, "new")) != "replayed"
    assert processor.process("t.search", 0, 3, _search("u1", TS + 200, "new")) == "replayed"
    assert _version(processor, "u1") == 11


def test_states_survive_their_bytes_with_partition_offsets() -> None:
    processor = _processor()
    processor.process("t.search", 2, 7, _search("u1", TS, "hello"))
    processor.epochs["t.click/1"] = 4
    processor.process("t.click", 1, 9, _search("u1", TS + 1, "world"))
    state = Session.from_bytes(processor.drain().states["u1"])
    assert state.offsets == {"t.search/2": [0, 7], "t.click/1": [4, 9]}
    # A state of the old format (one offset per topic) loads, without those offsets.
    old = orjson.loads(processor.session("u1").to_bytes())
    old["offsets"] = {"t.search": 7}
    assert Session.from_bytes(orjson.dumps(old)).offsets == {}


def test_a_user_back_after_years_does_not_overflow_the_profile() -> None:
    processor = _processor()
    processor.process("t.search", 0, 0, _search("u1", TS - 1_100 * DAY, "old interest"))
    outcome = processor.process("t.search", 0, 1, _search("u1", TS, "new interest"))
    assert outcome == "novel_search"
    session = processor.session("u1")
    assert session.version == 2 and session.profile["t:new"] > 0
    assert session.profile["t:old"] == 0.0  # decayed to nothing, not to infinity


def test_a_future_event_time_is_clamped_to_its_record_time_and_does_not_freeze_the_user() -> None:
    processor = _processor()
    now = WALL - DAY
    y2099 = 4_070_908_800_000
    processor.process("t.search", 0, 0, _search("u1", now, "laptop"), record_ts=now)
    processor.process("t.search", 0, 1, _search("u1", y2099, "phone"), record_ts=now)
    assert processor.clamped == 1
    session = processor.session("u1")
    assert session.last_ts == now + processor.max_future_ms
    # Ten later searches on new topics, an hour apart: they fire (not debounced for 73 years).
    fired = [
        processor.process(
            "t.search", 0, 2 + i, _search("u1", now + (i + 1) * 3_600_000, f"topic{i} thing{i}")
        )
        for i in range(10)
    ]
    assert fired.count("novel_search") == 10
    # Without a record time the bound is the wall clock.
    processor.process("t.search", 0, 20, _search("u2", y2099, "x y"))
    assert processor.session("u2").last_ts == WALL + processor.max_future_ms


def test_requests_carry_the_state_watermark() -> None:
    processor = _processor()
    processor.process("t.search", 0, 0, _search("u1", TS, "laptop"))
    [(_, data)] = processor.drain().requests
    request = RegenerationRequest.model_validate_json(data)
    assert request.watermark_ts == TS and request.version == 1


def test_replayed_stream_events_count_once() -> None:
    processor = _processor()
    for replay in range(2):  # the same file twice: new offsets, same event ids
        for n in range(5):
            value = _search("u1", TS + n, f"q{n}", event_id=f"aol#{n}")
            processor.process("t.search", 0, replay * 5 + n, value)
    assert _version(processor, "u1") == 5
    assert processor.outcomes["duplicate"] == 5
    # A replay cut short, then the whole file: only what is new is applied.
    for n in range(8):
        processor.process(
            "t.search", 0, 10 + n, _search("u1", TS + n, f"q{n}", event_id=f"aol#{n}")
        )
    assert _version(processor, "u1") == 8


def test_a_record_that_breaks_the_state_code_is_dead_lettered_not_a_poison_pill() -> None:
    processor = _processor({"bad": b"{not a state"})
    assert processor.process("t.search", 0, 0, _search("bad", TS, "q")) == "dead_letter"
    assert processor.process("t.search", 0, 1, _search("good", TS, "q")) == "cold_start"
    assert processor.outcomes["internal_error"] == 1
    [letter] = [orjson.loads(d) for d in processor.drain().dead_letters]
    assert letter["reason"].startswith("internal error") and letter["origin"] == "t.search/0@0"
    assert _version(processor, "good") == 1


# --- issue 16: the user's search history -----------------------------------------------------


def test_history_of_users_who_searched_is_drained_strongest_first() -> None:
    processor = _processor(history=True)
    processor.process("t.search", 0, 0, _search("a", TS, "Rain Jacket"))
    processor.process("t.search", 0, 1, _search("a", TS + 1, "boots"))
    processor.process("t.search", 0, 2, _search("a", TS + 2, "rain  jacket"))
    processor.process("t.click", 0, 0, encode(_click("b", TS + 3)))  # no search: no history
    drained = processor.drain()
    assert drained.history == [("a", ["rain jacket", "boots"])]
    state = Session.from_bytes(drained.states["a"])
    assert state.history == {"rain jacket": [2, TS + 2], "boots": [1, TS + 1]}
    processor.process("t.click", 0, 1, encode(_click("a", TS + 4)))
    assert processor.drain().history == []  # only users whose history changed
    processor.process("t.search", 0, 2, _search("a", TS + 2, "rain jacket"))  # re-delivered
    assert processor.drain().history == []
    quiet = _processor()  # off by default
    quiet.process("t.search", 0, 0, _search("a", TS, "boots"))
    assert quiet.drain().history == []


def test_requests_carry_the_top_history_queries_bounded() -> None:
    from aigq.events import MAX_REQUEST_HISTORY

    processor = _processor()
    for i in range(15):
        processor.process("t.search", 0, i, _search("u", TS + i * DAY, f"query {i % 12}"))
    requests = [RegenerationRequest.model_validate_json(r) for _, r in processor.drain().requests]
    (request,) = requests
    assert len(request.history) == MAX_REQUEST_HISTORY
    assert request.history[:3] == ("query 2", "query 1", "query 0")  # searched twice, newest


def test_old_states_without_history_load_empty_and_old_requests_decode() -> None:
    processor = _processor()
    processor.process("t.search", 0, 0, _search("u1", TS, "hello"))
    old = orjson.loads(processor.session("u1").to_bytes())
    del old["history"]
    assert Session.from_bytes(orjson.dumps(old)).history == {}
    ((_, raw),) = processor.drain().requests
    request = orjson.loads(raw)
    assert request["history"] == ["hello"]
    del request["history"]
    assert RegenerationRequest.model_validate(request).history == ()


def _click(user: str, ts: int) -> Any:
    from aigq.events import ClickEvent

    return ClickEvent(user_id=user, ts=ts, item_id="sku-1", item_text="a coat", category=("c",))
