"""``aigq serve``: the online read API (FastAPI on uvicorn) over :class:`cache.hints.HintClient`.

    GET /v1/hints/{user_id}?k=10   the user's hints (history, u2q, x2q, popular), with sources
    POST /v1/hint-clicks           a click on a hint query, to Kafka (cache/clicks.py)
    GET /healthz                   the process is up
    GET /readyz                    Redis answers (503 otherwise)
    GET /metrics                   Prometheus text
    GET /openapi.json, /docs       the OpenAPI spec and its browser

Bad input is a 4xx with a short JSON ``{"error": ..., "detail": [...]}``; a slow or absent
Redis is a 503 within ``AIGQ_HINTS_TIMEOUT_MS``; anything unexpected is a bare 500 (logged
here, never a stack trace in a response). With ``AIGQ_SERVE_API_KEYS`` set, the hints
endpoint wants one of them in ``AIGQ_SERVE_API_KEY_HEADER``; health, readiness, metrics and
the spec stay open (the server binds to loopback unless told otherwise).

:class:`ReadAPI` is the ASGI app uvicorn runs: ``GET /v1/hints/...`` goes straight to
:class:`cache.endpoint.HintsEndpoint` (see there for the measurement behind it), the rest to
FastAPI, whose route for the same path documents it and calls the same handler.

With ``AIGQ_SERVE_LOG_EXPOSURES`` on, every served list is logged to Kafka off the read path
(:mod:`cache.exposures`, started and stopped by the lifespan) and the click endpoint produces
through the same producer; off, the API needs no Kafka and the click endpoint answers 503.
"""

# No ``from __future__ import annotations``: FastAPI reads endpoint annotations at run time.

import os
from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException
from starlette.responses import Response

from aigq import __version__
from aigq.errors import ConfigError
from aigq.events import MAX_SHOWN_QUERIES, USER_ID_PATTERN, USER_ID_RULE
from aigq.logging import configure_logging, get_logger
from aigq.metrics import Metrics
from aigq.settings import KafkaSettings, RedisSettings, TopicSettings, load
from cache.clicks import PATH as CLICKS_PATH
from cache.clicks import ClickOut, click_operation, click_reply
from cache.compose import Source
from cache.endpoint import PATH_PREFIX, HintsEndpoint, Reply, Send, error_reply
from cache.errors import CacheError
from cache.exposures import ExposureLog
from cache.hints import HintClient
from cache.serve_metrics import ServeMetrics
from cache.settings import HintSettings, ServeSettings

log = get_logger(__name__)
_JSON = (b"content-type", b"application/json")


class HintOut(BaseModel):
    query: str
    source: Source
    trigger: str | None = Field(None, description="x2q: the trigger key that found it")


class U2QOut(BaseModel):
    model_version: str
    session_version: int
    reason: str = Field(description="what triggered the run (cold_start, drift, ...)")
    event_ts: int = Field(description="event time (UTC ms) of the behaviour behind the run")
    generated_ts: int = Field(description="when the run was generated (UTC ms)")
    age_ms: int = Field(description="how old the run is: now minus generated_ts")


class HintsOut(BaseModel):
    request_id: str = Field(
        description="the caller's X-Request-Id when it is a valid id (the user-id rule), else "
        "a new random one; report clicks on these hints against it (POST /v1/hint-clicks)"
    )
    user_id: str
    k: int = Field(description="hints asked for, after capping at the maximum")
    hints: list[HintOut]
    u2q: U2QOut | None = Field(description="the freshest u2q run, or null when there is none")
    fallback: Literal["popular", "static"] | None = Field(
        description="popular: Redis' popular queries; static: the configured list"
    )
    degraded: bool = Field(description="something stored was unreadable and was skipped")


class StatusOut(BaseModel):
    status: Literal["ok", "ready"]


class ErrorOut(BaseModel):
    error: str
    detail: list[str] = Field(default_factory=list)


def _response(reply: Reply) -> Response:
    status, body, headers = reply
    response = Response(body, status_code=status)
    if not any(name == b"content-length" for name, _ in headers):  # not chunked
        headers = [*headers, (b"content-length", str(len(body)).encode())]
    response.raw_headers = headers
    return response


def _hints_operation(hints: HintSettings, serve: ServeSettings) -> dict[str, Any]:
    """The OpenAPI text of the hints endpoint, whose parameters the handler itself parses."""
    operation: dict[str, Any] = {
        "parameters": [
            {
                "name": "user_id",
                "in": "path",
                "required": True,
                "description": f"the user: {USER_ID_RULE}",
                "schema": {"type": "string", "pattern": USER_ID_PATTERN, "maxLength": 256},
            },
            {
                "name": "k",
                "in": "query",
                "required": False,
                "description": f"hints wanted (default {hints.default_k}; values above "
                f"{hints.max_k} are cut to {hints.max_k})",
                "schema": {"type": "integer", "minimum": 1},
            },
        ],
    }
    if serve.api_keys:
        operation["security"] = [{"ApiKey": []}]
    return operation


def _fastapi(
    hints: HintSettings,
    serve: ServeSettings,
    endpoint: HintsEndpoint,
    metrics: Metrics,
    serve_metrics: ServeMetrics,
) -> FastAPI:
    exposures = endpoint.exposures

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with HintClient(app.state.redis, hints) as client:
            endpoint.client = client
            if exposures is not None:
                await exposures.start()
            try:
                yield
            finally:
                endpoint.client = None
                if exposures is not None:
                    await exposures.stop()  # sends what is buffered, within a bound

    app = FastAPI(
        title="aigq read API",
        version=__version__,
        summary="Fresh personalised hint queries (u2q, x2q, popular) for online services.",
        lifespan=lifespan,
    )
    _hint_routes(app, hints, serve, endpoint)
    _click_route(app, serve, endpoint, serve_metrics)
    _health_routes(app, endpoint, metrics)
    _error_handlers(app)
    _openapi(app, serve)
    return app


def _auth_responses(serve: ServeSettings) -> dict[int | str, dict[str, Any]]:
    if not serve.api_keys:
        return {}
    return {401: {"model": ErrorOut, "description": "missing or invalid API key"}}


def _hint_routes(
    app: FastAPI, hints: HintSettings, serve: ServeSettings, endpoint: HintsEndpoint
) -> None:
    responses: dict[int | str, dict[str, Any]] = {
        422: {"model": ErrorOut, "description": "invalid user_id or k"},
        503: {"model": ErrorOut, "description": "the hint cache is slow or down; retry"},
        **_auth_responses(serve),
    }

    @app.get(
        "/v1/hints/{user_id}",
        response_model=HintsOut,
        responses=responses,
        openapi_extra=_hints_operation(hints, serve),
        summary="A user's hint queries, freshest sources first",
    )
    async def get_hints(request: Request) -> Response:
        return _response(await endpoint.respond(request.scope))

    # ReadAPI sends GET straight to the endpoint; HEAD comes this way, to the same handler.
    app.add_api_route("/v1/hints/{user_id}", get_hints, methods=["HEAD"], include_in_schema=False)


def _click_route(
    app: FastAPI, serve: ServeSettings, endpoint: HintsEndpoint, serve_metrics: ServeMetrics
) -> None:
    exposures = endpoint.exposures
    responses: dict[int | str, dict[str, Any]] = {
        422: {"model": ErrorOut, "description": "a bad body: the detail names the field"},
        503: {
            "model": ErrorOut,
            "description": "Kafka did not acknowledge the click in time, or click logging is "
            "off; retry after Retry-After seconds",
        },
        **_auth_responses(serve),
    }

    @app.post(
        CLICKS_PATH,
        status_code=202,
        response_model=ClickOut,
        responses=responses,
        openapi_extra=click_operation(serve),
        include_in_schema=exposures is not None,  # off, it can only answer 503
        summary="Report a click on a hint query (produced to <prefix>.hint_click)",
    )
    async def post_click(request: Request) -> Response:
        reply = await click_reply(
            request, endpoint, exposures, serve_metrics.clicks, serve.click_timeout_ms / 1000
        )
        return _response(reply)


def _health_routes(app: FastAPI, endpoint: HintsEndpoint, metrics: Metrics) -> None:
    @app.get("/healthz", response_model=StatusOut, summary="The process is up")
    async def healthz() -> Response:
        return _response((200, b'{"status":"ok"}', [_JSON]))

    @app.get(
        "/readyz",
        response_model=StatusOut,
        summary="Redis answers",
        responses={503: {"model": ErrorOut, "description": "Redis does not answer"}},
    )
    async def readyz() -> Response:
        if endpoint.client is None:
            return _response(error_reply(503, "not started"))
        try:
            await endpoint.client.ping()
        except CacheError as exc:
            log.warning("not_ready", error=str(exc))
            return _response(error_reply(503, "hint cache unavailable"))
        return _response((200, b'{"status":"ready"}', [_JSON]))

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


def _error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        detail = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        return _response(error_reply(422, "invalid request", detail))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        return _response(error_reply(exc.status_code, str(exc.detail), headers=exc.headers))

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> Response:
        log.error("internal_error", path=request.url.path, exc_info=exc)
        return _response(error_reply(500, "internal error"))


def _openapi(app: FastAPI, serve: ServeSettings) -> None:
    """The spec, with the API-key scheme when keys are configured."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = get_openapi(
                title=app.title, version=app.version, summary=app.summary, routes=app.routes
            )
            if serve.api_keys:
                schemes = spec.setdefault("components", {}).setdefault("securitySchemes", {})
                schemes["ApiKey"] = {"type": "apiKey", "in": "header", "name": serve.api_key_header}
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


class ReadAPI:
    """The ASGI app: ``GET /v1/hints/...`` to the endpoint, everything else to FastAPI."""

    def __init__(
        self,
        hints: HintSettings,
        serve: ServeSettings,
        redis: RedisSettings,
        metrics: Metrics | None = None,
        kafka: KafkaSettings | None = None,
        topics: TopicSettings | None = None,
    ) -> None:
        """``kafka`` and ``topics`` matter only with ``serve.log_exposures``; left out, they
        are read from the environment (AIGQ_KAFKA_*, AIGQ_TOPICS_*)."""
        self.serve = serve  # the connection limits, read by cache.http.LimitedHttpProtocol
        self.metrics = metrics if metrics is not None else Metrics()
        self.serve_metrics = ServeMetrics(self.metrics)
        self.exposures = _exposure_log(hints, serve, self.serve_metrics, kafka, topics)
        self.endpoint = HintsEndpoint(hints, serve, self.serve_metrics, self.exposures)
        self.fastapi = _fastapi(hints, serve, self.endpoint, self.metrics, self.serve_metrics)
        self.fastapi.state.redis = redis

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Send) -> None:
        if self.endpoint.handles(scope):
            await self.endpoint(scope, receive, send)
        else:
            await self.fastapi(scope, receive, send)

    def lifespan(self) -> Any:
        """The app's lifespan as an async context manager (for in-process clients and tests)."""
        return self.fastapi.router.lifespan_context(self.fastapi)


def _exposure_log(
    hints: HintSettings,
    serve: ServeSettings,
    metrics: ServeMetrics,
    kafka: KafkaSettings | None,
    topics: TopicSettings | None,
) -> ExposureLog | None:
    if not serve.log_exposures:
        return None
    if hints.max_k > MAX_SHOWN_QUERIES:
        raise ConfigError(
            f"AIGQ_HINTS_MAX_K: at most {MAX_SHOWN_QUERIES} with AIGQ_SERVE_LOG_EXPOSURES "
            f"(an exposure holds that many hints), got {hints.max_k}"
        )
    log_ = ExposureLog(
        kafka if kafka is not None else load(KafkaSettings),
        topics if topics is not None else load(TopicSettings),
        serve,
        metrics.exposures,
    )
    metrics.exposure_backlog = log_.buffer.__len__
    return log_


def app_from_env() -> ReadAPI:
    """The uvicorn factory: each worker process reads its settings here, at start-up."""
    configure_logging(os.environ.get("AIGQ_LOG_LEVEL", "INFO"))
    return ReadAPI(load(HintSettings), load(ServeSettings), load(RedisSettings))


def uvicorn_options(serve: ServeSettings) -> dict[str, Any]:
    """How uvicorn runs the API (the command and the tests use the same)."""
    from cache.http import LimitedHttpProtocol

    return {
        "host": serve.bind,
        "port": serve.port,
        "loop": "uvloop",
        "http": LimitedHttpProtocol,  # httptools, with the slow-client limits
        "lifespan": "on",
        "access_log": serve.access_log,
        "log_config": None,  # our logging (aigq.logging), not uvicorn's
        "server_header": False,
        "proxy_headers": False,  # no X-Forwarded-* rewriting: nothing here uses the client
        "timeout_graceful_shutdown": 5,
        # Slow clients: the read deadline is the protocol's (AIGQ_SERVE_HEADER_TIMEOUT_S);
        # an idle keep-alive connection is closed, and past the limit requests get a 503.
        "timeout_keep_alive": serve.keep_alive_s,
        "limit_concurrency": serve.limit_concurrency,
        "ws": "none",  # no WebSocket endpoints: an upgrade is not handed to another protocol
    }


def run_server(serve: ServeSettings) -> None:
    """Run the server ``serve.server`` names, with ``serve.workers`` processes, until
    SIGINT/SIGTERM."""
    if serve.server == "granian":
        _run_granian(serve)
        return
    import uvicorn

    uvicorn.run(
        "cache.api:app_from_env", factory=True, workers=serve.workers, **uvicorn_options(serve)
    )


def _run_granian(serve: ServeSettings) -> None:
    """The same ASGI app on granian, through its public API. What it has of the slow-client
    limits: its own header read deadline (at most 60 s); not uvicorn's idle keep-alive
    timeout, the per-connection request cap or the 503 past a concurrency limit."""
    try:
        from granian.constants import Interfaces, Loops
        from granian.http import HTTP1Settings
        from granian.server import Server
    except ImportError as exc:
        raise ConfigError("AIGQ_SERVE_SERVER=granian needs granian: pip install granian") from exc
    Server(
        "cache.api:app_from_env",
        address=serve.bind,
        port=serve.port,
        interface=Interfaces.ASGI,
        workers=serve.workers,
        loop=Loops.uvloop,
        factory=True,
        log_access=serve.access_log,
        http1_settings=HTTP1Settings(
            header_read_timeout=int(min(serve.header_timeout_s, 60.0) * 1000)
        ),
    ).serve()


__all__ = [
    "PATH_PREFIX",
    "ErrorOut",
    "HintsOut",
    "ReadAPI",
    "app_from_env",
    "run_server",
    "uvicorn_options",
]
