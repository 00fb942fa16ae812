"""From raw request records to requests, runs and dead letters: the pure half of the worker."""

from __future__ import annotations

from typing import Any

import orjson

from aigq.codec import encode
from aigq.events import MAX_VERSION, RegenerationRequest
from generators.requests import Letter, Record, decode_request, run_for

TS = 1_767_225_600_000


def _request(user: str = "u1", version: int = 3, **fields: Any) -> RegenerationRequest:
    return RegenerationRequest(
        user_id=user,
        version=version,
        reason="drift",
        shift=0.4,
        event_ts=TS,
        created_ts=TS + 5,
        fingerprint="fp",
        recent=((TS - 1, "search", "running shoes", ""),),
        profile=(("t:running", 1.0),),
        **fields,
    )


def _records(*values: bytes | None) -> list[Record]:
    return [("t.regenerate", 2, 100 + n, value) for n, value in enumerate(values)]


def _letters(values: list[Record], **kwargs: Any) -> list[tuple[str, dict[str, Any]]]:
    decoded = [decode_request(value, **kwargs)[1] for value in values]
    return [(d.kind, orjson.loads(d.record)) for d in decoded if isinstance(d, Letter)]


def test_a_too_large_record_is_cut_at_the_limit_and_says_so() -> None:
    big = b'{"pad":"' + b"x" * 2_000 + b'"}'
    [(kind, letter)] = _letters(_records(big), max_bytes=1_000)
    assert kind == "too_large"
    assert letter["truncated"] is True
    assert letter["payload"] == big[:1_000].decode()
    assert letter["origin"] == "t.regenerate/2@100"
    assert "2010 bytes; the limit is 1000" in letter["reason"]


def test_an_unbounded_version_is_a_dead_letter_not_a_request() -> None:
    poison = encode(_request()).replace(b'"version":3', b'"version":%d' % 2**63)
    good = encode(_request("u2"))
    decoded = [decode_request(r) for r in _records(poison, good, None)]
    assert [d.user_id for _, d in decoded if isinstance(d, RegenerationRequest)] == ["u2"]
    assert [(s.origin, s.value) for s, _ in decoded][1] == ("t.regenerate/2@101", good)
    [(kind, letter), (no_value, _)] = _letters(_records(poison, good, None))
    assert (kind, letter["field"], letter["payload"]) == ("invalid", "version", poison.decode())
    assert str(MAX_VERSION) in letter["reason"]
    assert no_value == "no_value"


def test_requests_order_by_watermark_then_version() -> None:
    old_state = _request(version=500, watermark_ts=TS)
    rebuilt = _request(version=2, watermark_ts=TS + 1)  # lower version, newer watermark
    same_ms = _request(version=3, watermark_ts=TS + 1)
    assert old_state.order < rebuilt.order < same_ms.order
    # Without a watermark a request orders by its event time.
    assert _request(version=9).order < rebuilt.order


def test_a_run_carries_the_watermark_or_the_event_time() -> None:
    run = run_for(_request(watermark_ts=TS + 7), ["q one"], "m-1", TS + 100)
    assert (run.watermark_ts, run.session_version, run.event_ts) == (TS + 7, 3, TS)
    assert run_for(_request(), ["q one"], "m-1", TS + 100).watermark_ts == TS
