"""The one orjson codec for events and dead letters.

``encode`` writes compact JSON with ``None`` fields left out; ``decode`` parses bytes (or str)
into the right event class and turns every failure into :class:`~aigq.errors.EventError`
naming the offending field.
"""

from __future__ import annotations

import base64
import time
from typing import Literal

import orjson
from pydantic import TypeAdapter, ValidationError

from aigq.errors import EventError
from aigq.events import (
    EVENT_TYPES,
    MAX_DEAD_LETTER_PAYLOAD,
    DeadLetter,
    Event,
    GeneratedQueries,
    ModelAnnouncement,
    RegenerationRequest,
)

MAX_EVENT_BYTES = 1 << 20  # one Kafka message's default size limit

_EVENT = TypeAdapter[Event](Event)


def encode(
    record: Event | DeadLetter | RegenerationRequest | GeneratedQueries | ModelAnnouncement,
) -> bytes:
    """Serialise a record to compact JSON bytes."""
    return orjson.dumps(record.model_dump(mode="json", exclude_none=True))


def event_key(event: Event) -> bytes:
    """The Kafka key of an event: its user id, so one user's events share a partition."""
    return event.user_id.encode()


def decode(data: bytes | bytearray | memoryview | str) -> Event:
    """Parse and validate one event; raise :class:`EventError` naming the bad field."""
    size = len(data)
    if size > MAX_EVENT_BYTES:
        raise EventError("<root>", f"payload is {size} bytes; the limit is {MAX_EVENT_BYTES}")
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise EventError("<root>", f"not valid JSON ({exc})") from exc
    if not isinstance(obj, dict):
        raise EventError("<root>", f"expected a JSON object, got {type(obj).__name__}")
    try:
        return _EVENT.validate_python(obj)
    except ValidationError as exc:
        raise _event_error(exc, obj.get("type")) from exc


def _event_error(exc: ValidationError, tag: object) -> EventError:
    first = exc.errors(include_url=False)[0]
    loc = [str(part) for part in first["loc"]]
    if loc and loc[0] == tag:  # a discriminated union puts the tag first: drop it
        loc = loc[1:]
    reason = first["msg"].removeprefix("Value error, ")
    if first["type"] == "union_tag_not_found":
        loc, reason = ["type"], f"missing; expected one of {', '.join(EVENT_TYPES)}"
    elif first["type"] == "union_tag_invalid":
        loc, reason = (
            ["type"],
            f"unknown event type {tag!r}; expected one of {', '.join(EVENT_TYPES)}",
        )
    if len(exc.errors()) > 1:
        reason += f" (and {len(exc.errors()) - 1} more errors)"
    return EventError(".".join(loc) or "<root>", reason)


def dead_letter(
    origin: str,
    payload: bytes | str,
    error: EventError | str,
    limit: int = MAX_DEAD_LETTER_PAYLOAD,
) -> DeadLetter:
    """Wrap an unusable payload with its reason, cut to ``limit`` characters (at most a size
    Kafka accepts); ``truncated`` says whether anything was cut. Pass the whole payload: the
    cut is made here so that the flag is true.

    Text is kept as text; bytes that are not UTF-8 are kept exactly, as base64
    (``encoding="base64"``), so no payload is ever altered on its way to the dead letters.
    """
    limit = min(limit, MAX_DEAD_LETTER_PAYLOAD)
    encoding: Literal["utf-8", "base64"] = "utf-8"
    if isinstance(payload, bytes):
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            text, encoding = base64.b64encode(payload).decode("ascii"), "base64"
    else:
        text = payload
    if isinstance(error, EventError):
        reason, field = error.reason, error.field
    else:
        reason, field = error, None
    return DeadLetter(
        origin=origin,
        reason=reason,
        field=field,
        payload=text[:limit],
        encoding=encoding,
        truncated=len(text) > limit,
        ts=int(time.time() * 1000),
    )
