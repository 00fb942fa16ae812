"""Event schemas and the orjson codec: round trips, edge cases, and errors that name the field."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from aigq.codec import MAX_EVENT_BYTES, dead_letter, decode, encode, event_key
from aigq.errors import EventError
from aigq.events import (
    MAX_BEHAVIOUR_CATEGORY_CHARS,
    MAX_BEHAVIOUR_TEXT_CHARS,
    MAX_DEAD_LETTER_PAYLOAD,
    MAX_FEATURE_CHARS,
    MAX_FINGERPRINT_CHARS,
    MAX_GENERATED_QUERIES,
    MAX_GENERATED_QUERY_CHARS,
    MAX_ITEM_TEXT_CHARS,
    MAX_PROFILE_FEATURES,
    MAX_QUERY_CHARS,
    MAX_RECENT_BEHAVIOURS,
    MAX_VERSION,
    ClickEvent,
    GeneratedQueries,
    HintClickEvent,
    HintExposureEvent,
    RegenerationRequest,
    SearchEvent,
    ShownQuery,
)

TS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def _search(**fields: Any) -> bytes:
    return orjson.dumps({"type": "search", "user_id": "u1", "ts": TS, "query": "shoes", **fields})


def _error(data: bytes | str) -> EventError:
    with pytest.raises(EventError) as caught:
        decode(data)
    return caught.value


@pytest.mark.parametrize(
    "event",
    [
        SearchEvent(user_id="u1", ts=TS, query="running shoes"),
        SearchEvent(user_id="u1", ts=TS, query="q", session_id="s1", context={"page": "home"}),
        ClickEvent(
            user_id="u1",
            ts=TS,
            item_id="sku-1",
            item_text="Trail runner",
            category=("Sports", "Shoes"),
        ),
        HintExposureEvent(
            user_id="u1",
            ts=TS,
            request_id="r1",
            shown=(
                ShownQuery(query="a", source="u2q", position=0),
                ShownQuery(query="b", source="x2q", position=1),
            ),
        ),
        HintClickEvent(user_id="u1", ts=TS, request_id="r1", query="b", source="x2q", position=1),
    ],
)
def test_every_event_kind_round_trips(event: Any) -> None:
    data = encode(event)
    assert decode(data) == event
    assert orjson.loads(data)["type"] == event.type


def test_none_fields_are_left_out_and_key_is_user_id() -> None:
    event = SearchEvent(user_id="u@7", ts=TS, query="x")
    assert "session_id" not in orjson.loads(encode(event))
    assert event_key(event) == b"u@7"


def test_unicode_survives_and_whitespace_is_stripped() -> None:
    event = decode(_search(query="  北京 烤鸭 🦆 café\t"))
    assert isinstance(event, SearchEvent)
    assert event.query == "北京 烤鸭 🦆 café"
    assert decode(encode(event)) == event


def test_decode_accepts_str_and_bytearray() -> None:
    data = _search()
    assert decode(data.decode()) == decode(bytearray(data)) == decode(memoryview(data))


def test_unknown_fields_are_ignored_by_choice() -> None:
    event = decode(_search(experiment="b", nested={"a": 1}))
    assert event == SearchEvent(user_id="u1", ts=TS, query="shoes")


@pytest.mark.parametrize("query", ["", "   ", "\t\n"])
def test_empty_query_names_the_field(query: str) -> None:
    assert _error(_search(query=query)).field == "query"


def test_nul_character_is_rejected() -> None:
    error = _error(_search(query="a\x00b"))
    assert (error.field, error.reason) == ("query", "contains a NUL character")


def test_huge_fields_are_rejected_with_the_field() -> None:
    assert _error(_search(query="q" * (MAX_QUERY_CHARS + 1))).field == "query"
    click = {
        "type": "click",
        "user_id": "u",
        "ts": TS,
        "item_id": "i",
        "item_text": "t" * (MAX_ITEM_TEXT_CHARS + 1),
    }
    assert _error(orjson.dumps(click)).field == "item_text"


def test_oversized_payload_is_rejected_before_parsing() -> None:
    error = _error(b" " * (MAX_EVENT_BYTES + 1))
    assert error.field == "<root>"
    assert str(MAX_EVENT_BYTES) in error.reason


def test_max_length_query_is_accepted() -> None:
    assert isinstance(decode(_search(query="q" * MAX_QUERY_CHARS)), SearchEvent)


@pytest.mark.parametrize(
    ("ts", "hint"),
    [
        (1_767_225_600, "looks like epoch seconds"),
        (-5, "not UTC epoch milliseconds"),
        (0, "not UTC epoch milliseconds"),
        (10**15, "not UTC epoch milliseconds"),
        ("1767225600000", "valid integer"),
        (1.7e12, "valid integer"),
        (True, "valid integer"),
        (None, "valid integer"),
    ],
)
def test_bad_timestamps_are_explained(ts: object, hint: str) -> None:
    error = _error(_search(ts=ts))
    assert error.field == "ts"
    assert hint in error.reason


def test_missing_field_is_named() -> None:
    data = orjson.dumps({"type": "click", "user_id": "u", "ts": TS, "item_text": "t"})
    error = _error(data)
    assert error.field == "item_id"
    assert "required" in error.reason.lower()


def test_wrong_type_for_a_string_field_is_rejected() -> None:
    assert _error(_search(user_id=123)).field == "user_id"


def test_missing_or_unknown_type_is_named() -> None:
    missing = _error(b'{"user_id": "u", "ts": 1767225600000}')
    assert missing.field == "type"
    assert "search, click, hint_exposure, hint_click" in missing.reason
    unknown = _error(_search(type="purchase"))
    assert (unknown.field, "'purchase'" in unknown.reason) == ("type", True)


@pytest.mark.parametrize(
    ("data", "reason"),
    [(b"{not json", "not valid JSON"), (b"[1, 2]", "got list"), (b'"x"', "got str"), (b"", "JSON")],
)
def test_unusable_payloads(data: bytes, reason: str) -> None:
    error = _error(data)
    assert error.field == "<root>"
    assert reason in error.reason


def test_nested_error_path_points_inside_the_list() -> None:
    exposure = {
        "type": "hint_exposure",
        "user_id": "u",
        "ts": TS,
        "request_id": "r",
        "shown": [
            {"query": "a", "source": "u2q", "position": 0},
            {"query": "b", "source": "u2q", "position": -1},
        ],
    }
    assert _error(orjson.dumps(exposure)).field == "shown.1.position"


def test_exposure_positions_must_be_unique_and_non_empty() -> None:
    base = {"type": "hint_exposure", "user_id": "u", "ts": TS, "request_id": "r"}
    twice = [{"query": q, "source": "u2q", "position": 0} for q in ("a", "b")]
    error = _error(orjson.dumps({**base, "shown": twice}))
    assert (error.field, "unique" in error.reason) == ("shown", True)
    assert _error(orjson.dumps({**base, "shown": []})).field == "shown"


def test_events_are_frozen() -> None:
    event = SearchEvent(user_id="u", ts=TS, query="q")
    with pytest.raises(ValueError, match="frozen"):
        event.query = "other"  # type: ignore[misc]


def test_dead_letter_keeps_payload_and_reason() -> None:
    bad = _search(ts="soon")
    letter = dead_letter("topic aigq.search/0@7", bad, _error(bad))
    assert letter.payload == bad.decode()
    assert (letter.field, letter.truncated) == ("ts", False)
    assert orjson.loads(encode(letter))["reason"] == letter.reason


def test_dead_letter_cuts_huge_payloads_and_flags_it() -> None:
    letter = dead_letter("file:1", "x" * (MAX_DEAD_LETTER_PAYLOAD + 10), "too long")
    assert len(letter.payload) == MAX_DEAD_LETTER_PAYLOAD
    assert letter.truncated
    assert letter.field is None


def test_dead_letter_keeps_non_utf8_bytes_exactly() -> None:
    raw = b'{"type": "search", "query": "\xff\xfe caf\xe9"}'
    letter = dead_letter("topic aigq.search/1@9", raw, "not UTF-8")
    assert letter.encoding == "base64"
    assert base64.b64decode(letter.payload) == raw
    assert dead_letter("x", b"ok text", "r").encoding == "utf-8"


# --- the generator's records: every field bounded ------------------------------------------


def _request(**fields: Any) -> dict[str, Any]:
    return {
        "type": "regeneration_request",
        "user_id": "u1",
        "version": 3,
        "reason": "drift",
        "shift": 0.5,
        "event_ts": TS,
        "created_ts": TS + 5,
        "fingerprint": "0123456789abcdef",
        "recent": [[TS - 1, "search", "running shoes", ""]],
        "profile": [["t:running", 1.0]],
        **fields,
    }


def _request_error(data: bytes) -> str:
    """The dotted path of the first field a request is refused for."""
    with pytest.raises(ValidationError) as caught:
        RegenerationRequest.model_validate_json(data)
    return ".".join(str(p) for p in caught.value.errors()[0]["loc"])


def test_a_request_at_every_bound_is_accepted() -> None:
    request = RegenerationRequest.model_validate_json(
        orjson.dumps(
            _request(
                version=MAX_VERSION,
                fingerprint="f" * MAX_FINGERPRINT_CHARS,
                recent=[
                    [
                        TS,
                        "click",
                        "t" * MAX_BEHAVIOUR_TEXT_CHARS,
                        "c" * MAX_BEHAVIOUR_CATEGORY_CHARS,
                    ]
                ]
                * MAX_RECENT_BEHAVIOURS,
                profile=[["f" * MAX_FEATURE_CHARS, 0.0], ["g", 1.0]]
                + [["h", 0.5]] * (MAX_PROFILE_FEATURES - 2),
                shift=1.0,
                watermark_ts=TS + 10,
            )
        )
    )
    assert request.version == MAX_VERSION == 2**53 - 1
    assert request.order == (TS + 10, MAX_VERSION)
    assert RegenerationRequest.model_validate(_request()).order == (TS, 3)  # no watermark


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"version": 2**63}, "version"),  # the poison pill of issue 15
        ({"version": MAX_VERSION + 1}, "version"),
        ({"version": 0}, "version"),
        ({"fingerprint": "f" * (MAX_FINGERPRINT_CHARS + 1)}, "fingerprint"),
        ({"recent": [[TS, "search", "q", ""]] * (MAX_RECENT_BEHAVIOURS + 1)}, "recent"),
        ({"recent": [[TS, "search", "q" * (MAX_BEHAVIOUR_TEXT_CHARS + 1), ""]]}, "recent.0.2"),
        ({"recent": [[TS, "click", "q", "c" * (MAX_BEHAVIOUR_CATEGORY_CHARS + 1)]]}, "recent.0.3"),
        ({"recent": [[2**62, "search", "q", ""]]}, "recent.0.0"),
        ({"recent": [[TS, "purchase", "q", ""]]}, "recent.0.1"),
        ({"profile": [["t:x", 0.01]] * (MAX_PROFILE_FEATURES + 1)}, "profile"),
        ({"profile": [["f" * (MAX_FEATURE_CHARS + 1), 0.5]]}, "profile.0.0"),
        ({"profile": [["", 0.5]]}, "profile.0.0"),
        ({"profile": [["t:x", 1.5]]}, "profile.0.1"),
        ({"profile": [["t:x", -0.1]]}, "profile.0.1"),
        ({"shift": 1.01}, "shift"),
        ({"watermark_ts": 5}, "watermark_ts"),
    ],
)
def test_every_request_field_is_bounded(fields: dict[str, Any], where: str) -> None:
    assert _request_error(orjson.dumps(_request(**fields))) == where


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity", b"1e999"])
def test_non_finite_numbers_are_refused(number: bytes) -> None:
    data = orjson.dumps(_request())
    assert _request_error(data.replace(b'"shift":0.5', b'"shift":' + number)) == "shift"
    weight = data.replace(b'["t:running",1.0]', b'["t:running",' + number + b"]")
    assert _request_error(weight) == "profile.0.1"


def _result(**fields: Any) -> dict[str, Any]:
    return {
        "user_id": "u1",
        "session_version": 3,
        "reason": "drift",
        "event_ts": TS,
        "request_ts": TS,
        "generated_ts": TS + 9,
        "model_version": "m-1",
        "backend": "vllm-http",
        "queries": ["a query"],
        "written": True,
        "model_ms": 12.5,
        **fields,
    }


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"queries": ["q"] * (MAX_GENERATED_QUERIES + 1)}, "queries"),
        ({"queries": ["q" * (MAX_GENERATED_QUERY_CHARS + 1)]}, "queries.0"),
        ({"session_version": MAX_VERSION + 1}, "session_version"),
        ({"model_ms": float("inf")}, "model_ms"),
        ({"blocked_ms": float("nan")}, "blocked_ms"),
    ],
)
def test_generated_queries_are_bounded(fields: dict[str, Any], where: str) -> None:
    assert GeneratedQueries.model_validate(_result(queries=["q"] * MAX_GENERATED_QUERIES))
    with pytest.raises(ValidationError) as caught:
        GeneratedQueries.model_validate(_result(**fields))
    assert ".".join(str(p) for p in caught.value.errors()[0]["loc"]) == where
