"""From raw regeneration-request records to prompts and back to cache runs: pure functions.

The generator worker is a loop around these. A micro-batch may hold several requests of one
user (the session agent fires again before the generator caught up): only the newest session
version is generated, since the cache would refuse the older ones anyway.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from pydantic import ValidationError

from aigq.codec import dead_letter, encode
from aigq.errors import EventError
from aigq.events import GeneratedQueries, RegenerationRequest
from cache.u2q import U2QRun
from generators.prompt import compressed_prompt, verbose_prompt

Record = tuple[str, int, int, bytes | None]  # topic, partition, offset, value


@dataclass
class Decoded:
    requests: list[RegenerationRequest] = field(default_factory=list)
    dead_letters: list[bytes] = field(default_factory=list)  # encoded DeadLetter records
    superseded: int = 0  # older requests of a user that has a newer one in the batch


def decode_requests(records: Sequence[Record], max_bytes: int = 256 * 1024) -> Decoded:
    """Valid requests (the newest per user, in first-seen order) and dead letters for the rest."""
    out = Decoded()
    newest: dict[str, RegenerationRequest] = {}
    for topic, partition, offset, value in records:
        origin = f"{topic}/{partition}@{offset}"
        if value is None:
            out.dead_letters.append(encode(dead_letter(origin, b"", "record has no value")))
            continue
        if len(value) > max_bytes:
            reason = f"payload is {len(value)} bytes; the limit is {max_bytes}"
            out.dead_letters.append(encode(dead_letter(origin, value[:max_bytes], reason)))
            continue
        try:
            request = RegenerationRequest.model_validate_json(value)
        except ValidationError as exc:
            error = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in error["loc"]) or "<root>"
            letter = dead_letter(origin, value, EventError(where, error["msg"]))
            out.dead_letters.append(encode(letter))
            continue
        seen = newest.get(request.user_id)
        if seen is not None:
            out.superseded += 1
            if seen.version >= request.version:
                continue
        newest[request.user_id] = request
    out.requests = list(newest.values())
    return out


def prompt_for(request: RegenerationRequest, k: int, compressed: bool = True) -> str:
    """The prompt of one request. Time buckets count back from the triggering event's time,
    so the same request always gives the same prompt (replays, audits, training)."""
    build = compressed_prompt if compressed else verbose_prompt
    return build(request.profile, request.recent, now_ms=request.event_ts, k=k)


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
    received: tuple[int, float] | None = None,
) -> GeneratedQueries:
    """``received``: when the generator took the request, and its blocked time by then."""
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
    )
