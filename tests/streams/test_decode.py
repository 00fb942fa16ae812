"""One decoder per record: the session processor applies exactly the records the schema
accepts, with the schema's fields, and dead-letters every other one (a property test over
generated records, hostile ones too). Before issue 18 a hand-written fast path sat beside the
schema, and this test held the two equal; it was removed, and the same records now check
that nothing between the raw bytes and the session bypasses the schema."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aigq.errors import EventError
from aigq.events import MAX_ID_CHARS, MAX_TS_MS, MIN_TS_MS
from streams.processor import SessionProcessor, event_fields
from streams.session import SessionConfig
from streams.triggers import TriggerPolicy

# The last four: separators Python's str.strip() removes and pydantic keeps (seen: "0\x1f").
_odd_text = st.sampled_from(
    [
        *["", " ", "\x00", "a\x00b", " padded ", "x" * (MAX_ID_CHARS + 1), "u 1", "ü", "\u3000"],
        *["0\x1f", "\x1c", "\x1d x \x1e", "\x85y\xa0"],
    ]
)
_text = st.one_of(st.text(max_size=8), _odd_text, st.just("ok"))
_user = st.one_of(
    st.from_regex(r"[A-Za-z0-9._:@+=-]{1,8}", fullmatch=True),
    _odd_text,
    st.just("u" * MAX_ID_CHARS),
    st.just("u" * (MAX_ID_CHARS + 1)),
)
_ts = st.one_of(
    st.integers(MIN_TS_MS, MAX_TS_MS - 1),
    st.sampled_from([MIN_TS_MS - 1, MAX_TS_MS, 1_700_000_000, True, 1.7e12, "1700000000000"]),
)
_any: st.SearchStrategy[Any] = st.one_of(
    st.none(), st.booleans(), st.integers(-2, 70), st.floats(allow_nan=False), _text
)
_context = st.one_of(
    st.none(),
    st.dictionaries(_text, st.one_of(_text, _any), max_size=3),
    st.dictionaries(st.text(min_size=1, max_size=3), st.just("v"), min_size=33, max_size=34),
    _any,
)
_shown = st.lists(
    st.fixed_dictionaries(
        {"query": _text, "source": _text, "position": st.one_of(st.integers(-1, 65), _any)}
    ),
    max_size=3,
)


def _maybe(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Records where each field may also be missing."""
    return st.fixed_dictionaries({}, optional=fields)


_records = st.builds(
    lambda base, kind, extra: {**base, **extra, **({"type": kind} if kind else {})},
    _maybe(user_id=_user, ts=_ts, event_id=st.one_of(_text, _any)),
    st.sampled_from(["search", "click", "hint_click", "hint_exposure", "other", None]),
    _maybe(
        query=_text,
        session_id=st.one_of(_text, _any),
        context=_context,
        item_id=_text,
        item_text=_text,
        category=st.one_of(st.lists(st.one_of(_text, _any), max_size=3), _any),
        request_id=_text,
        source=_text,
        position=st.one_of(st.integers(-1, 65), _any),
        shown=st.one_of(_shown, _any),
    ),
)


@settings(max_examples=1_500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_records)
def test_the_processor_takes_exactly_what_the_schema_accepts(record: dict[str, Any]) -> None:
    data = orjson.dumps(record)
    try:
        fields = event_fields(data)
    except EventError:
        fields = None
    store: dict[str, bytes] = {}
    processor = SessionProcessor(SessionConfig(), TriggerPolicy(), load=store.get, generate=False)
    outcome = processor.process("t.search", 0, 1, data)
    drained = processor.drain()
    if fields is None:
        assert outcome == "dead_letter", record
        assert len(drained.dead_letters) == 1
        return
    assert outcome != "dead_letter", record
    assert not drained.dead_letters
    assert fields.user_id in processor.sessions  # applied, to the user the schema read


def test_the_ordinary_records_are_accepted() -> None:
    ts = 1_767_225_600_000
    ordinary = [
        {"type": "search", "user_id": "u1", "ts": ts, "query": "red shoes", "session_id": "s"},
        {"type": "search", "user_id": "u1", "ts": ts, "query": "x", "context": {"page": "home"}},
        {"type": "click", "user_id": "u1", "ts": ts, "item_id": "i", "item_text": "t",
         "category": ["a", "b"]},
        {"type": "hint_click", "user_id": "u1", "ts": ts, "request_id": "r", "query": "q",
         "source": "u2q", "position": 0},
        {"type": "hint_exposure", "user_id": "u1", "ts": ts, "request_id": "r",
         "shown": [{"query": "q", "source": "u2q", "position": 0}], "event_id": "aol#3"},
    ]  # fmt: skip
    for record in ordinary:
        assert event_fields(orjson.dumps(record)).user_id == "u1", record
