"""``GET /v1/hints/{user_id}?k=10``, the hot endpoint, as a plain ASGI handler.

Measured on this machine (2 cores, uvicorn with httptools and uvloop, 32 connections):
uvicorn alone answers about 26,000 requests/s from one process; a FastAPI route that takes
nothing but the ``Request`` about 11,000/s. FastAPI's per-request machinery (middleware
stack, routing, parameter solving) costs more than the whole Redis read, so
:class:`cache.api.ReadAPI` hands ``GET /v1/hints/...`` straight to this handler and
everything else (OpenAPI, docs, health, readiness, metrics, HEAD) to FastAPI. FastAPI's own
route for this path calls the same :meth:`HintsEndpoint.respond`, so there is one parser,
one validation and one response for it, whichever way a request comes in.

Every 200 carries a ``request_id``: the caller's ``X-Request-Id`` when it is a valid id (the
user-id rule), else 32 random hex digits, so that a click can be reported against the list
it came from. With exposure logging on, a GET's non-empty list is handed to
:class:`cache.exposures.ExposureLog` under that id (an append to a bounded buffer; HEAD
shows nothing, so logs nothing).
"""

from __future__ import annotations

import hmac
import os
import re
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

import orjson

from aigq.events import USER_ID_RULE
from aigq.logging import get_logger
from cache.errors import CacheError, CacheTimeoutError, InvalidRequestError
from cache.exposures import ExposureLog
from cache.hints import HintClient, HintResult, check_user_id
from cache.serve_metrics import ServeMetrics
from cache.settings import HintSettings, ServeSettings

log = get_logger(__name__)

PATH_PREFIX = "/v1/hints/"
_DIGITS = re.compile(rb"[0-9]+")
_REQUEST_ID_HEADER = b"x-request-id"
_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:@+=-]{1,256}")  # the user-id rule (aigq.events)
_JSON = (b"content-type", b"application/json")

Scope = MutableMapping[str, Any]
Headers = list[tuple[bytes, bytes]]
Reply = tuple[int, bytes, Headers]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


_RETRY = {"Retry-After": "1"}


def error_reply(
    status: int,
    error: str,
    detail: list[str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Reply:
    """A JSON ``{"error": ..., "detail": [...]}`` reply."""
    body = orjson.dumps({"error": error, "detail": detail or []})
    extra = [(name.lower().encode(), value.encode()) for name, value in (headers or {}).items()]
    return status, body, [_JSON, (b"content-length", str(len(body)).encode()), *extra]


def request_id(given: bytes | None) -> str:
    """The response's request id: ``given`` (an ``X-Request-Id`` value) when it follows the
    user-id rule, else a new random one (32 hex digits)."""
    if given is not None and _REQUEST_ID.fullmatch(given):
        return given.decode("ascii")
    return os.urandom(16).hex()


def hints_body(result: HintResult, request_id: str) -> dict[str, Any]:
    """The JSON body of a hints response (``cache.api.HintsOut``)."""
    run = result.u2q
    return {
        "request_id": request_id,
        "user_id": result.user_id,
        "k": result.k,
        "hints": [
            {"query": h.query, "source": h.source, "trigger": h.trigger} for h in result.hints
        ],
        "u2q": None
        if run is None
        else {
            "model_version": run.model_version,
            "session_version": run.session_version,
            "reason": run.reason,
            "event_ts": run.event_ts,
            "generated_ts": run.generated_ts,
            "age_ms": result.u2q_age_ms,
        },
        "fallback": result.fallback,
        "degraded": result.corrupt,
    }


def parse_k(query_string: bytes, max_k: int) -> tuple[int | None, str | None]:
    """``k`` from a raw query string: ``(k or None, problem or None)``; large k are capped.

    The last ``k=`` wins; other parameters are ignored.
    """
    raw: bytes | None = None
    for pair in query_string.split(b"&"):
        name, _, value = pair.partition(b"=")
        if name == b"k":
            raw = value
    if raw is None:
        return None, None
    digits = raw.lstrip(b"0")
    if not _DIGITS.fullmatch(raw) or not digits:
        return None, "k: must be a whole number >= 1 (larger than the maximum is capped)"
    return (max_k if len(digits) > 9 else min(int(digits), max_k)), None


class HintsEndpoint:
    """Request in, ``(status, body, headers)`` out; ``client`` is set by the app's lifespan."""

    def __init__(
        self,
        hints: HintSettings,
        serve: ServeSettings,
        metrics: ServeMetrics,
        exposures: ExposureLog | None = None,
    ) -> None:
        self.client: HintClient | None = None
        self.exposures = exposures
        self._max_k = hints.max_k
        self._keys = [key.get_secret_value().encode() for key in serve.api_keys]
        self._key_header = serve.api_key_header.lower().encode()
        self._m = metrics
        self._warned: dict[str, tuple[float, int]] = {}  # event -> (last logged, since then)

    def _warn(self, event: str, error: Exception) -> None:
        """Log a failure at most once a second per kind (an outage fails every request)."""
        now = time.monotonic()
        last, suppressed = self._warned.get(event, (0.0, 0))
        if now - last >= 1.0:
            log.warning(event, error=str(error), suppressed_since_last=suppressed)
            self._warned[event] = (now, 0)
        else:
            self._warned[event] = (last, suppressed + 1)

    def handles(self, scope: Scope) -> bool:
        return bool(
            scope["type"] == "http"
            and scope["method"] == "GET"
            and scope["path"].startswith(PATH_PREFIX)
        )

    async def __call__(self, scope: Scope, receive: Any, send: Send) -> None:
        status, body, headers = await self.respond(scope)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def respond(self, scope: Scope) -> Reply:
        started = time.perf_counter()
        try:
            return await self._respond(scope, started)
        except Exception as exc:  # a bare 500: never a stack trace in a response
            self._m.failed("internal", started)
            log.error("internal_error", path=scope.get("path"), exc_info=exc)
            return error_reply(500, "internal error")

    def authorised(self, headers: Headers) -> bool:
        """Whether ``headers`` carry one of the API keys (always, when there are none)."""
        if not self._keys:
            return True
        given = b""
        for name, value in headers:
            if name == self._key_header:
                given = value
        return any(hmac.compare_digest(given, key) for key in self._keys)

    async def _respond(self, scope: Scope, started: float) -> Reply:
        if not self.authorised(scope["headers"]):
            self._m.unauthorized()
            return error_reply(401, "missing or invalid API key")
        user_id = scope["path"][len(PATH_PREFIX) :]
        problems = []
        try:
            check_user_id(user_id)
        except InvalidRequestError:
            problems.append(f"user_id: must be {USER_ID_RULE}")
        k, problem = parse_k(scope["query_string"], self._max_k)
        if problem:
            problems.append(problem)
        if problems:
            self._m.failed("bad_request", started)
            return error_reply(422, "invalid request", problems)
        client = self.client
        if client is None:
            return error_reply(503, "not started", headers=_RETRY)
        try:
            result = await client.hints(user_id, k)
        except CacheTimeoutError as exc:
            self._m.failed("timeout", started)
            self._warn("hints_timeout", exc)
            return error_reply(503, "hint cache timed out", headers=_RETRY)
        except CacheError as exc:
            self._m.failed("redis", started)
            self._warn("hints_unavailable", exc)
            return error_reply(503, "hint cache unavailable", headers=_RETRY)
        given = None
        for name, value in scope["headers"]:
            if name == _REQUEST_ID_HEADER:
                given = value
        rid = request_id(given)
        body = orjson.dumps(hints_body(result, rid))
        if self.exposures is not None and result.hints and scope["method"] == "GET":
            self.exposures.log(result, rid)
        self._m.served(result, started)
        return 200, body, [_JSON, (b"content-length", str(len(body)).encode())]
