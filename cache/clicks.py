"""``POST /v1/hint-clicks``: hint clicks to ``<prefix>.hint_click``, for online services that
do not write to Kafka themselves (issue 19).

The body is a :class:`ClickIn`; it becomes an :class:`aigq.events.HintClickEvent` (which also
strips surrounding whitespace and refuses NUL characters: a 422 as well) and is produced keyed
by user id through the exposure log's producer (:func:`send_click`).
The route reads the body itself, so the API key is checked before anything else (FastAPI's
body parameters are parsed before any dependency runs). Answers:

- 202 ``{"status": "accepted"}`` once Kafka has acknowledged the record;
- 401 without a valid key (when ``AIGQ_SERVE_API_KEYS`` is set), 422 for a bad body (or one
  over ``MAX_BODY_BYTES``, 16 KiB, which is not read further);
- 503 with ``Retry-After`` when Kafka did not acknowledge within
  ``AIGQ_SERVE_CLICK_TIMEOUT_MS`` or cannot be reached, or when click logging is off
  (``AIGQ_SERVE_LOG_EXPOSURES=false``); the error says which.

The route is in the OpenAPI spec only when click logging is on: a deployment without Kafka
does not advertise an endpoint that can only answer 503.
"""

# No ``from __future__ import annotations``: FastAPI reads endpoint annotations at run time.

import asyncio
import time
from typing import Annotated, Any, Literal

from fastapi import Request
from pydantic import BaseModel, Field, StrictInt, ValidationError

from aigq import codec
from aigq.events import (
    MAX_ID_CHARS,
    MAX_QUERY_CHARS,
    MAX_SHOWN_QUERIES,
    MAX_TS_MS,
    MIN_TS_MS,
    USER_ID_PATTERN,
    HintClickEvent,
)
from cache.endpoint import HintsEndpoint, Reply, error_reply
from cache.exposures import ExposureLog, Throttled
from cache.settings import ServeSettings

PATH = "/v1/hint-clicks"
_RETRY = {"Retry-After": "1"}
# A click's fields fit in about 2 KB; JSON escapes (\uXXXX) can make the query six times longer.
MAX_BODY_BYTES = 16 * 1024
_throttle = Throttled()
_ACCEPTED = (202, b'{"status":"accepted"}', [(b"content-type", b"application/json")])

Text = Annotated[str, Field(min_length=1, max_length=MAX_ID_CHARS)]


class ClickIn(BaseModel):
    """A click on a hint query, as the client reports it (bounded like ``HintClickEvent``)."""

    user_id: Annotated[
        str, Field(max_length=MAX_ID_CHARS, pattern=USER_ID_PATTERN, description="the user")
    ]
    request_id: Text = Field(description="the request_id of the hints response it was shown in")
    query: Annotated[str, Field(min_length=1, max_length=MAX_QUERY_CHARS)] = Field(
        description="the hint query clicked, as shown"
    )
    source: Text = Field(description="its source in that response (history, u2q, x2q, popular)")
    position: Annotated[StrictInt, Field(ge=0, lt=MAX_SHOWN_QUERIES)] = Field(
        description="its 0-based position in that response"
    )
    ts: Annotated[StrictInt, Field(ge=MIN_TS_MS, lt=MAX_TS_MS)] | None = Field(
        None, description="when it was clicked (UTC epoch ms); default: when it arrives"
    )


class ClickOut(BaseModel):
    status: Literal["accepted"]


def _problems(exc: ValidationError, where: str) -> list[str]:
    return [
        f"{'.'.join(map(str, (where, *e['loc'])))}: {e['msg'].removeprefix('Value error, ')}"
        for e in exc.errors(include_url=False)
    ]


def _json_body(request: Request) -> bool:
    kind = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    return kind == "application/json" or (
        kind.startswith("application/") and kind.endswith("+json")
    )


async def _read(request: Request) -> bytes:
    """The body, refused (ValueError) past ``MAX_BODY_BYTES`` without reading further."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise ValueError(f"body: larger than {MAX_BODY_BYTES} bytes")
    return bytes(body)


async def send_click(exposures: ExposureLog, event: HintClickEvent, timeout_s: float) -> bool:
    """Produce ``event`` to ``<prefix>.hint_click`` keyed by user; True once Kafka has
    acknowledged it, False when it could not within ``timeout_s`` (the record may still
    arrive later: a client that retries may write it twice)."""
    from aiokafka.errors import KafkaError

    producer = exposures.producer
    if producer is None:
        return False
    try:
        async with asyncio.timeout(timeout_s):
            delivery = await producer.send(
                exposures.click_topic, codec.encode(event), key=codec.event_key(event)
            )
            delivery.add_done_callback(_consume)  # a late failure is not "never retrieved"
            await asyncio.shield(delivery)  # the deadline does not cancel the delivery
    except (TimeoutError, KafkaError) as exc:
        _throttle.warn("hint_click_not_sent", exc)
        return False
    return True


def _consume(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


async def click_reply(
    request: Request,
    endpoint: HintsEndpoint,
    exposures: ExposureLog | None,
    counts: dict[str, int],
    timeout_s: float,
) -> Reply:
    """Check the key, then the body, then produce: the reply of one click request."""
    if not endpoint.authorised(request.scope["headers"]):
        counts["unauthorized"] += 1
        return error_reply(401, "missing or invalid API key")
    try:
        if not _json_body(request):
            raise ValueError("body: content-type must be application/json")
        click = ClickIn.model_validate_json(await _read(request))
        event = HintClickEvent(
            user_id=click.user_id,
            ts=click.ts if click.ts is not None else int(time.time() * 1000),
            request_id=click.request_id,
            query=click.query,
            source=click.source,
            position=click.position,
        )
    except ValidationError as exc:
        counts["bad_request"] += 1
        return error_reply(422, "invalid request", _problems(exc, "body"))
    except ValueError as exc:
        counts["bad_request"] += 1
        return error_reply(422, "invalid request", [str(exc)])
    if exposures is None:
        counts["off"] += 1
        return error_reply(
            503, "click logging is off (AIGQ_SERVE_LOG_EXPOSURES=false)", headers=_RETRY
        )
    if not await send_click(exposures, event, timeout_s):
        counts["kafka_unavailable"] += 1
        return error_reply(503, "Kafka is unavailable; retry", headers=_RETRY)
    counts["accepted"] += 1
    return _ACCEPTED


def click_operation(serve: ServeSettings) -> dict[str, Any]:
    """The OpenAPI text the route adds to FastAPI's: its body (the route reads it itself)
    and, with API keys, its security."""
    operation: dict[str, Any] = {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": ClickIn.model_json_schema()}},
        }
    }
    if serve.api_keys:
        operation["security"] = [{"ApiKey": []}]
    return operation
