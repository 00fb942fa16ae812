"""Typed event records: what flows through the Kafka topics.

Four event kinds share one envelope (``type``, ``user_id``, ``ts``):

- ``search``: the user typed and submitted a query.
- ``click``: the user clicked an item; the item travels with a short text surrogate
  (``item_text``, a title or the words of a URL) and its category path, root first.
- ``hint_exposure``: the online service showed hint queries (each with its recall source and
  0-based position) under one ``request_id``.
- ``hint_click``: the user clicked one of those hint queries.

Rules every record follows:

- ``ts`` is UTC epoch **milliseconds**, a JSON integer between 1990-01-01 and 2100-01-01; a
  value in seconds is rejected with a hint rather than silently read as 1970.
- ``user_id`` follows one rule everywhere (events, requests, the read API): 1 to 256 characters
  of ``A-Z a-z 0-9 . _ : @ + = -`` (:data:`USER_ID_RULE`), so every user an event names can be
  read back; other ids are dead letters.
- Text is stripped of surrounding whitespace; empty text, NUL characters and oversized fields
  are rejected naming the field (the limits are the ``MAX_*`` constants below).
- **Unknown fields are ignored, by explicit choice**: a newer producer may add optional fields
  without breaking an older consumer. Schemas evolve only by adding optional fields.

Records are frozen pydantic models; :mod:`aigq.codec` turns them into bytes and back.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, TypeAlias

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StringConstraints,
    field_validator,
)

MIN_TS_MS = 631_152_000_000  # 1990-01-01T00:00:00Z
MAX_TS_MS = 4_102_444_800_000  # 2100-01-01T00:00:00Z
MAX_ID_CHARS = 256
MAX_QUERY_CHARS = 1_024
MAX_ITEM_TEXT_CHARS = 4_096
MAX_CATEGORY_DEPTH = 16
MAX_CATEGORY_CHARS = 128
MAX_SHOWN_QUERIES = 64
MAX_CONTEXT_ENTRIES = 32

# The one user-id rule: every id an event carries must be one the read API can be asked for.
USER_ID_CHARS = "A-Za-z0-9._:@+=-"
USER_ID_PATTERN = f"^[{USER_ID_CHARS}]{{1,{MAX_ID_CHARS}}}$"  # for JSON schemas (OpenAPI)
USER_ID_RULE = f"1 to {MAX_ID_CHARS} characters of A-Z a-z 0-9 . _ : @ + = -"
USER_ID_RE = re.compile(f"[{USER_ID_CHARS}]{{1,{MAX_ID_CHARS}}}")


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("contains a NUL character")
    return value


def _check_ts(value: int) -> int:
    if MIN_TS_MS <= value < MAX_TS_MS:
        return value
    if MIN_TS_MS // 1000 <= value < MAX_TS_MS // 1000:
        raise ValueError(f"{value} looks like epoch seconds; timestamps are UTC epoch milliseconds")
    raise ValueError(
        f"{value} is not UTC epoch milliseconds between 1990-01-01 and 2100-01-01 "
        f"({MIN_TS_MS}..{MAX_TS_MS - 1})"
    )


def _text(max_chars: int) -> object:
    return StringConstraints(strip_whitespace=True, min_length=1, max_length=max_chars)


def _user_id(value: str) -> str:
    if not USER_ID_RE.fullmatch(value):
        raise ValueError(f"must be {USER_ID_RULE}")
    return value


Id = Annotated[str, _text(MAX_ID_CHARS), AfterValidator(_no_nul)]
# Not stripped: an id with surrounding spaces is another id, and the read API rejects spaces.
UserId = Annotated[str, StringConstraints(max_length=MAX_ID_CHARS), AfterValidator(_user_id)]
QueryText = Annotated[str, _text(MAX_QUERY_CHARS), AfterValidator(_no_nul)]
ItemText = Annotated[str, _text(MAX_ITEM_TEXT_CHARS), AfterValidator(_no_nul)]
CategoryName = Annotated[str, _text(MAX_CATEGORY_CHARS), AfterValidator(_no_nul)]
TimestampMs = Annotated[StrictInt, AfterValidator(_check_ts)]
Position = Annotated[StrictInt, Field(ge=0, lt=MAX_SHOWN_QUERIES)]


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class _Envelope(_Record):
    user_id: UserId
    ts: TimestampMs
    event_id: Id | None = None
    """Optional, set by the producer. An id ``<stream>#<n>`` (``n`` counting the user's events
    of that stream from 0, as ``aigq replay`` writes them) makes the event idempotent: a
    session applies each ``n`` of a stream once, so a file replayed twice counts once."""


class SearchEvent(_Envelope):
    """The user submitted ``query``. ``context`` carries small free-form tags (page, device)."""

    type: Literal["search"] = "search"
    query: QueryText
    session_id: Id | None = None
    context: Annotated[dict[Id, Id], Field(max_length=MAX_CONTEXT_ENTRIES)] | None = None


class ClickEvent(_Envelope):
    """The user clicked ``item_id``; ``item_text`` is its short text surrogate.

    ``category`` is the item's category path, root first (empty when unknown).
    """

    type: Literal["click"] = "click"
    item_id: Id
    item_text: ItemText
    category: Annotated[tuple[CategoryName, ...], Field(max_length=MAX_CATEGORY_DEPTH)] = ()
    session_id: Id | None = None


class ShownQuery(_Record):
    """One hint query as shown: its text, the recall source that produced it, its position."""

    query: QueryText
    source: Id
    position: Position


class HintExposureEvent(_Envelope):
    """Hint queries shown to the user under one ``request_id``.

    ``model_version`` names the generation model of the u2q run the list was composed with
    (absent when the user had none): served CTR per model version is counted from it.
    """

    type: Literal["hint_exposure"] = "hint_exposure"
    request_id: Id
    shown: Annotated[tuple[ShownQuery, ...], Field(min_length=1, max_length=MAX_SHOWN_QUERIES)]
    model_version: Id | None = None

    @field_validator("shown")
    @classmethod
    def _positions_unique(cls, shown: tuple[ShownQuery, ...]) -> tuple[ShownQuery, ...]:
        positions = [s.position for s in shown]
        if len(set(positions)) != len(positions):
            raise ValueError(f"positions must be unique, got {positions}")
        return shown


class HintClickEvent(_Envelope):
    """The user clicked the hint ``query`` shown at ``position`` under ``request_id``."""

    type: Literal["hint_click"] = "hint_click"
    request_id: Id
    query: QueryText
    source: Id
    position: Position


Event: TypeAlias = Annotated[
    SearchEvent | ClickEvent | HintExposureEvent | HintClickEvent, Field(discriminator="type")
]
EventType = Literal["search", "click", "hint_exposure", "hint_click"]
EVENT_TYPES: tuple[EventType, ...] = ("search", "click", "hint_exposure", "hint_click")


MAX_PATH_CHARS = 4_096
ModelKind = Literal["generator", "ctr"]


class ModelAnnouncement(_Record):
    """A model version became current (``<prefix>.models``): published or rolled back to.

    ``name`` / ``version`` are the registry's (``aigq-direct`` / ``v0003``); ``path`` is the
    version's folder as the trainer saw it (a generator on another machine resolves
    ``name@version`` in its own registry); ``adapter`` says the folder is a LoRA adapter over
    ``base`` (what a vLLM server loads at run time) rather than a whole model. ``reason`` is
    ``publish`` or ``rollback``; ``ts`` when it was announced (UTC ms).
    """

    type: Literal["model_announcement"] = "model_announcement"
    kind: ModelKind
    name: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    version: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    path: Annotated[str, StringConstraints(max_length=MAX_PATH_CHARS)] = ""
    adapter: bool = False
    base: Annotated[str, StringConstraints(max_length=MAX_PATH_CHARS)] = ""
    reason: Literal["publish", "rollback"] = "publish"
    ts: TimestampMs

    @property
    def tag(self) -> str:
        return f"{self.name}@{self.version}"


class DeadLetter(_Record):
    """A record that could not be used, kept whole with the reason, so that nothing is lost.

    ``origin`` says where it came from (``aol:1012899.txt:17``, ``topic aigq.search/3@1200``),
    ``payload`` is the raw text, or the raw bytes as base64 when they are not UTF-8
    (``encoding``), cut to ``MAX_DEAD_LETTER_PAYLOAD`` characters (flagged by ``truncated``);
    ``ts`` is when it was dead-lettered.
    """

    type: Literal["dead_letter"] = "dead_letter"
    origin: str
    reason: str
    field: str | None = None
    payload: str
    encoding: Literal["utf-8", "base64"] = "utf-8"
    truncated: bool = False
    ts: StrictInt


MAX_DEAD_LETTER_PAYLOAD = 512 * 1024


TriggerReason = Literal[
    "cold_start", "drift", "new_category", "novel_search", "stale", "every_event"
]
BehaviourKind = Literal["search", "click", "hint_click"]

# Bounds of the generator's records: every field that crosses a process boundary has one, so a
# hostile or broken producer can only make a record that is dead-lettered, never one that
# breaks a consumer later (the u2q write, the prompt, a JSON reader in another language).
MAX_VERSION = 2**53 - 1  # the largest integer a double holds exactly (JSON readers, Lua)
MAX_FINGERPRINT_CHARS = 64
MAX_RECENT_BEHAVIOURS = 64
MAX_BEHAVIOUR_TEXT_CHARS = 1_024
MAX_BEHAVIOUR_CATEGORY_CHARS = 1_024
MAX_PROFILE_FEATURES = 64
MAX_FEATURE_CHARS = 256
MAX_GENERATED_QUERIES = 64
MAX_GENERATED_QUERY_CHARS = 1_024
MAX_REQUEST_HISTORY = 10  # the user's top history queries a request carries

SessionVersion = Annotated[StrictInt, Field(ge=1, le=MAX_VERSION)]
Behaviour = tuple[
    TimestampMs,
    BehaviourKind,
    Annotated[str, StringConstraints(max_length=MAX_BEHAVIOUR_TEXT_CHARS)],
    Annotated[str, StringConstraints(max_length=MAX_BEHAVIOUR_CATEGORY_CHARS)],
]
Feature = tuple[
    Annotated[str, StringConstraints(min_length=1, max_length=MAX_FEATURE_CHARS)],
    Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)],
]
GeneratedQuery = Annotated[str, StringConstraints(max_length=MAX_GENERATED_QUERY_CHARS)]
Millis = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]


class RegenerationRequest(_Record):
    """A user's interests changed enough to generate fresh hint queries (``<prefix>.regenerate``).

    ``version`` is the user's session version when the trigger fired, ``watermark_ts`` the
    newest event time (UTC ms) the session state had applied then (absent: ``event_ts``): a
    generator writes its result only over an older ``(watermark_ts, version)`` pair, so a state
    rebuilt from the log (whose version counts from lower) still wins over the old one.
    ``recent`` holds the session's last behaviours, oldest first, as
    ``(ts, kind, text, category)``; ``profile`` its strongest interest features
    (``t:<word>`` / ``c:<category>``) with weights summing to 1. ``event_ts`` is the event time
    of the behaviour that fired it, ``created_ts`` the wall time it was emitted (both UTC ms).
    ``ingest_ts``, when known, is the Kafka timestamp of that behaviour's record: the wall time
    it entered the event topics (freshness is measured from it; event times of a replayed log
    are in the past). ``history`` holds the user's own most searched queries, strongest first
    (:func:`cache.history.top_queries` of the session's fold, normalised; empty in records
    written before it existed). ``fired_ts`` is the wall time the trigger first fired in the
    session worker: ``created_ts - fired_ts`` is how long it waited for the regeneration budget
    (docs/overload.md). Every field is bounded (the ``MAX_*`` constants above).
    """

    type: Literal["regeneration_request"] = "regeneration_request"
    user_id: UserId
    version: SessionVersion
    reason: TriggerReason
    shift: Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
    event_ts: TimestampMs
    created_ts: TimestampMs
    fingerprint: Annotated[str, StringConstraints(max_length=MAX_FINGERPRINT_CHARS)]
    recent: Annotated[tuple[Behaviour, ...], Field(max_length=MAX_RECENT_BEHAVIOURS)]
    profile: Annotated[tuple[Feature, ...], Field(max_length=MAX_PROFILE_FEATURES)]
    ingest_ts: TimestampMs | None = None
    watermark_ts: TimestampMs | None = None
    history: Annotated[tuple[QueryText, ...], Field(max_length=MAX_REQUEST_HISTORY)] = ()
    fired_ts: TimestampMs | None = None

    @property
    def order(self) -> tuple[int, int]:
        """What the u2q compare-and-set orders runs by: ``(watermark_ts, version)``."""
        return (self.event_ts if self.watermark_ts is None else self.watermark_ts, self.version)


class GeneratedQueries(_Record):
    """One generated hint-query list, as logged to ``<prefix>.results`` for training and audit.

    ``session_version`` / ``reason`` / ``event_ts`` come from the request it answers;
    ``queries`` is the validated list, most likely first (empty when the output was malformed:
    then nothing was written to the cache); ``written`` says whether the cache took it (false:
    a newer session version was there already). ``model_ms`` is the backend time of the batch
    it was generated in, ``generated_ts`` the wall time it was written (UTC ms);
    ``ingest_ts`` is the request's (when known) and ``received_ts`` when the generator took the
    request from Kafka, so ``generated_ts - ingest_ts`` is the end-to-end freshness.
    ``blocked_ms`` is the generator's total time, by ``received_ts``, spent unable to take
    requests (every generation slot busy, or a backend down): the difference between two of
    its records is how long it was blocked in between, i.e. queueing for the model in Kafka.
    ``queued_ms`` is how long the request then waited in the generator's pending set for a
    generation slot (``generators.pending``). ``fired_ts`` is the request's (when known).
    """

    type: Literal["generated_queries"] = "generated_queries"
    user_id: UserId
    session_version: SessionVersion
    reason: TriggerReason
    event_ts: TimestampMs
    request_ts: TimestampMs
    generated_ts: TimestampMs
    model_version: str
    backend: str
    queries: Annotated[tuple[GeneratedQuery, ...], Field(max_length=MAX_GENERATED_QUERIES)]
    written: bool
    model_ms: Millis
    prompt: str | None = None
    ingest_ts: TimestampMs | None = None
    received_ts: TimestampMs | None = None
    blocked_ms: Millis | None = None
    queued_ms: Millis | None = None
    fired_ts: TimestampMs | None = None
