"""One served list as the exposure log keeps it, and its ``hint_exposure`` record.

The request path keeps two flat tuples of strings (:func:`exposure_of`); the log's sender
encodes them (:func:`encode_exposure`) with orjson, checking the event's bounds itself:
validating a ten-hint :class:`aigq.events.HintExposureEvent` through pydantic and dumping it
costs 13.5 µs here, this 3 µs. ``tests/cache/test_exposures.py`` checks that
:func:`aigq.codec.decode` reads back exactly the event pydantic would have built.
"""

from __future__ import annotations

from itertools import chain
from typing import Any, NamedTuple

import orjson

from aigq.events import MAX_ID_CHARS, MAX_QUERY_CHARS, MAX_SHOWN_QUERIES, MAX_TS_MS, MIN_TS_MS
from cache.compose import Hint
from cache.hints import HintResult


class Exposure(NamedTuple):
    """What the request path keeps of one served list (:func:`exposure_of`)."""

    user_id: str
    ts: int  # when it was read (UTC ms)
    request_id: str
    hints: tuple[str | None, ...]  # each hint's fields (query, source, trigger), one after another
    model_version: str | None  # the u2q run's, when the read found one


_HINT_FIELDS = len(Hint._fields)
_new_exposure = tuple.__new__


def exposure_of(result: HintResult, request_id: str) -> Exposure:
    """The exposure of one read, made of strings in two flat tuples.

    Keeping the :class:`HintResult` itself (twenty-odd tuples, lists and objects) until the
    sender runs kept them alive past the garbage collector's young generation: with the log on,
    the API process ran ten times as many collections, 0.8 s of 9 s under full load, and full
    collections paused it for up to 46 ms. Flattened, a record is two objects; this costs
    0.6 µs here."""
    run = result.u2q
    return _new_exposure(
        Exposure,
        (
            result.user_id,
            result.read_at_ms,
            request_id,
            tuple(chain.from_iterable(result.hints)),
            None if run is None else run.model_version,
        ),
    )


def _is_text(value: str, max_chars: int) -> bool:
    """Whether pydantic would keep ``value`` unchanged as the events' stripped, NUL-free text."""
    return 0 < len(value) <= max_chars and value.strip() == value and "\x00" not in value


def encode_exposure(exposure: Exposure) -> bytes | None:
    """The ``hint_exposure`` record of one served list as JSON bytes, as :func:`aigq.codec.encode`
    writes it; None when a field breaks the event's bounds (or the list is empty).

    ``model_version`` is the u2q run's whenever the read found one: the list was composed with
    that run, even where its queries repeat the user's history (then shown as history, first):
    served CTR per model version compares what users saw under each model."""
    user_id, ts, request_id, fields, model_version = exposure
    count = len(fields) // _HINT_FIELDS
    if not 0 < count <= MAX_SHOWN_QUERIES or not _is_text(request_id, MAX_ID_CHARS):
        return None
    if not MIN_TS_MS <= ts < MAX_TS_MS:
        return None
    shown = []
    for position in range(count):
        query, source = fields[position * _HINT_FIELDS : position * _HINT_FIELDS + 2]
        if not isinstance(query, str) or not _is_text(query, MAX_QUERY_CHARS):
            return None
        shown.append({"query": query, "source": source, "position": position})
    record: dict[str, Any] = {
        "user_id": user_id,
        "ts": ts,
        "type": "hint_exposure",
        "request_id": request_id,
        "shown": shown,
    }
    if model_version is not None:
        if not _is_text(model_version, MAX_ID_CHARS):
            return None
        record["model_version"] = model_version
    return orjson.dumps(record)
