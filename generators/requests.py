"""From raw regeneration-request records to prompts and back to cache runs: pure functions.

The generator worker is a loop around these. Requests of one user are ordered by the cache's
own order ``(watermark_ts, version)``: only the newest is worth generating, since the cache
would refuse the older ones anyway (:mod:`generators.pending` keeps one per user).

A record that cannot be used, at any step, becomes a :class:`Letter`: the dead-letter record
(origin, reason, the payload as it came) and a short ``kind`` the worker counts it under.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import ValidationError

from aigq.codec import dead_letter, encode
from aigq.errors import EventError
from aigq.events import MAX_DEAD_LETTER_PAYLOAD, GeneratedQueries, RegenerationRequest
from cache.u2q import U2QRun
from generators.prompt import compressed_prompt, verbose_prompt

Record = tuple[str, int, int, bytes | None]  # topic, partition, offset, value
MAX_REQUEST_BYTES = 256 * 1024

# Why a record was dead-lettered: the label of the worker's dead-letter counter (a short, closed
# set; the full reason is in the dead letter itself).
LetterKind = Literal[
    "no_value",  # a record without a value
    "too_large",  # over MAX_REQUEST_BYTES
    "invalid",  # not a RegenerationRequest (not JSON, a field out of its bounds, ...)
    "prompt",  # its prompt could not be built
    "backend_refused",  # the backend refused its prompt (a 4xx)
    "backend_error",  # generating it failed with an error that is not an outage
    "run",  # its run could not be made
    "cache_refused",  # Redis refused its u2q write
    "result",  # its result record could not be made
]


@dataclass(frozen=True, slots=True)
class Letter:
    kind: LetterKind
    record: bytes  # the encoded DeadLetter


@dataclass(frozen=True, slots=True)
class Source:
    """Where a request came from, and its bytes as they came (what a dead letter keeps)."""

    origin: str  # topic/partition@offset
    value: bytes

    def letter(
        self, kind: LetterKind, reason: str | EventError, limit: int = MAX_DEAD_LETTER_PAYLOAD
    ) -> Letter:
        """The dead letter of this record (its payload cut to ``limit``, flagged if cut)."""
        return Letter(kind, encode(dead_letter(self.origin, self.value, reason, limit=limit)))


def decode_request(
    record: Record, max_bytes: int = MAX_REQUEST_BYTES
) -> tuple[Source, RegenerationRequest | Letter]:
    """One record: where it came from, and its request or the dead letter saying why not."""
    topic, partition, offset, value = record
    source = Source(f"{topic}/{partition}@{offset}", value or b"")
    if value is None:
        return source, source.letter("no_value", "record has no value")
    if len(value) > max_bytes:
        reason = f"payload is {len(value)} bytes; the limit is {max_bytes}"
        return source, source.letter("too_large", reason, limit=max_bytes)
    try:
        return source, RegenerationRequest.model_validate_json(value)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in error["loc"]) or "<root>"
        return source, source.letter("invalid", EventError(where, error["msg"]))


def prompt_for(request: RegenerationRequest, k: int, compressed: bool = True) -> str:
    """The prompt of one request. Time buckets count back from the triggering event's time,
    so the same request always gives the same prompt (replays, audits, training)."""
    build = compressed_prompt if compressed else verbose_prompt
    return build(
        request.profile, request.recent, now_ms=request.event_ts, k=k, history=request.history
    )


def run_for(
    request: RegenerationRequest, queries: Sequence[str], model_version: str, now_ms: int
) -> U2QRun:
    return U2QRun(
        queries=tuple(queries),
        model_version=model_version,
        session_version=request.version,
        event_ts=request.event_ts,
        generated_ts=now_ms,
        reason=request.reason,
        watermark_ts=request.order[0],
    )


def result_record(
    request: RegenerationRequest,
    queries: Sequence[str],
    *,
    written: bool,
    model_version: str,
    backend: str,
    model_ms: float,
    now_ms: int,
    prompt: str | None = None,
    received: tuple[int, float, float] | None = None,
) -> GeneratedQueries:
    """``received``: when the generator read the request, its blocked time by then, and the
    request's time in the pending set (ms)."""
    return GeneratedQueries(
        user_id=request.user_id,
        session_version=request.version,
        reason=request.reason,
        event_ts=request.event_ts,
        request_ts=request.created_ts,
        generated_ts=now_ms,
        model_version=model_version,
        backend=backend,
        queries=tuple(queries),
        written=written,
        model_ms=model_ms,
        prompt=prompt,
        ingest_ts=request.ingest_ts,
        received_ts=received[0] if received else None,
        blocked_ms=received[1] if received else None,
        queued_ms=received[2] if received else None,
        fired_ts=request.fired_ts,
    )
