"""Settings of the read path: the hint client (``AIGQ_HINTS_*``), the API (``AIGQ_SERVE_*``).

Two objects, because a service that reads Redis directly through :class:`cache.hints.HintClient`
needs the first and not the second. Both are frozen and read by the command being run.

    AIGQ_HINTS_DEFAULT_K / _MAX_K  hints when k is not given; larger k are cut to this
    AIGQ_HINTS_TRIGGERS            recent triggers looked up in x2q per request
    AIGQ_HINTS_PER_TRIGGER         x2q queries read per trigger
    AIGQ_HINTS_TIMEOUT_MS          a whole read (connect included): past it, the cache is down
    AIGQ_HINTS_POPULAR_FALLBACK    comma-separated queries for when Redis has no popular set
    AIGQ_SERVE_BIND / _PORT        where the API listens (loopback unless set)
    AIGQ_SERVE_WORKERS             uvicorn worker processes
    AIGQ_SERVE_API_KEYS            comma-separated keys (secret); none: no auth
    AIGQ_SERVE_API_KEY_HEADER      the header that carries one (X-API-Key)
    AIGQ_SERVE_HEADER_TIMEOUT_S    a request (headers, any body) must arrive within this (5 s)
    AIGQ_SERVE_KEEP_ALIVE_S        an idle keep-alive connection is closed after this (5 s)
    AIGQ_SERVE_MAX_REQUESTS_PER_CONNECTION  then the connection is closed (0: no bound)
    AIGQ_SERVE_LIMIT_CONCURRENCY   connections + requests in flight per worker; past it, 503
    AIGQ_SERVE_LOG_EXPOSURES       log served lists to <prefix>.hint_exposure and take hint
                                   clicks (POST /v1/hint-clicks); where: AIGQ_KAFKA_*, AIGQ_TOPICS_*
    AIGQ_SERVE_EXPOSURE_BUFFER / _BATCH / _LINGER_MS / _TIMEOUT_MS / _FLUSH_S  the exposure log
    AIGQ_SERVE_CLICK_TIMEOUT_MS    a click's deadline for Kafka's acknowledgement
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from aigq.settings import check_bind
from cache.history import TOP_STORED


def _comma_list(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


class HintSettings(BaseSettings):
    """How :class:`cache.hints.HintClient` reads and composes hints."""

    model_config = SettingsConfigDict(env_prefix="AIGQ_HINTS_", frozen=True, extra="forbid")

    default_k: int = Field(10, ge=1, le=1000, description="hints when the caller gives no k")
    max_k: int = Field(50, ge=1, le=1000, description="larger k are cut to this")
    triggers: int = Field(5, ge=0, le=50, description="recent triggers looked up in x2q")
    per_trigger: int = Field(10, ge=1, le=100, description="x2q queries read per trigger")
    history: int = Field(
        10, ge=0, le=TOP_STORED, description="the user's past queries put first (0: no history)"
    )
    timeout_ms: int = Field(100, ge=1, le=60_000, description="a whole read, connect included")
    popular_fallback: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="static fallback when Redis holds no popular queries"
    )

    @field_validator("popular_fallback", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return _comma_list(value)

    @model_validator(mode="after")
    def _k(self) -> Self:
        if self.default_k > self.max_k:
            raise ValueError(f"default_k ({self.default_k}) must be <= max_k ({self.max_k})")
        return self

    @property
    def timeout_s(self) -> float:
        return self.timeout_ms / 1000


_HEADER = re.compile(r"^[A-Za-z0-9-]{1,64}$")


class ServeSettings(BaseSettings):
    """Where and how ``aigq serve`` listens."""

    model_config = SettingsConfigDict(env_prefix="AIGQ_SERVE_", frozen=True, extra="forbid")

    bind: str = Field("127.0.0.1", description="address to listen on (0.0.0.0: every interface)")
    port: int = Field(8080, ge=1, le=65535, description="the read API's port")
    workers: int = Field(1, ge=1, le=64, description="server worker processes")
    server: Literal["uvicorn", "granian"] = Field(
        "uvicorn",
        description="uvicorn (httptools, with the header deadline and request cap of "
        "cache/http.py) or granian (pip install granian; its own header read timeout, at most "
        "60 s; no request cap, idle keep-alive timeout or 503 at the concurrency limit): "
        "docs/read-api.md has the figures",
    )
    api_keys: Annotated[tuple[SecretStr, ...], NoDecode] = Field(
        (), description="accepted API keys; none: no authentication"
    )
    api_key_header: str = Field("X-API-Key", description="header carrying the key")
    access_log: bool = Field(False, description="uvicorn's per-request access log")
    header_timeout_s: float = Field(
        5.0,
        gt=0,
        le=300,
        description="a new connection's first request, or any request from its first byte, "
        "must arrive whole (headers and any body) within this; else the connection is closed",
    )
    keep_alive_s: int = Field(
        5, ge=1, le=3600, description="an idle keep-alive connection is closed after this"
    )
    max_requests_per_connection: int = Field(
        0, ge=0, description="a connection is closed after this many requests (0: no bound)"
    )
    limit_concurrency: int = Field(
        1000,
        ge=1,
        le=1_000_000,
        description="open connections (and requests in flight) per worker past which "
        "requests are answered 503 (uvicorn's limit_concurrency)",
    )

    log_exposures: bool = Field(
        False,
        description="log every served list to <prefix>.hint_exposure and accept hint clicks "
        "(POST /v1/hint-clicks, to <prefix>.hint_click); Kafka is AIGQ_KAFKA_*, the prefix "
        "AIGQ_TOPICS_PREFIX. Off: no Kafka client, and the click endpoint answers 503",
    )
    exposure_buffer: int = Field(
        10_000,
        ge=1,
        le=1_000_000,
        description="exposures held in memory for the sender; a list served while it is full "
        "is not logged (counted: buffer_full, or kafka_unavailable while Kafka is down)",
    )
    exposure_batch: int = Field(
        2_000, ge=1, le=100_000, description="exposures the sender takes from the buffer at most"
    )
    exposure_linger_ms: int = Field(
        10,
        ge=0,
        le=10_000,
        description="the sender gathers exposures this long before it encodes and sends them "
        "(one produce request each time): longer costs the API less CPU per list but holds "
        "the requests up longer while a batch is handed to Kafka",
    )
    exposure_timeout_ms: int = Field(
        5_000,
        ge=100,
        le=120_000,
        description="the producer's request timeout: an exposure not acknowledged within it "
        "counts as kafka_unavailable (connecting is bounded by it too)",
    )
    exposure_flush_s: float = Field(
        3.0,
        ge=0,
        le=60,
        description="at shutdown, buffered exposures are sent within this; the rest are counted "
        "(shutdown)",
    )
    click_timeout_ms: int = Field(
        2_000,
        ge=10,
        le=60_000,
        description="POST /v1/hint-clicks waits this long for Kafka's acknowledgement, then "
        "answers 503",
    )

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return _comma_list(value)

    @field_validator("bind")
    @classmethod
    def _bind(cls, value: str) -> str:
        return check_bind(value)

    @field_validator("api_key_header")
    @classmethod
    def _header(cls, value: str) -> str:
        if not _HEADER.match(value):
            raise ValueError(f"{value!r} is not a header name ([A-Za-z0-9-]{{1,64}})")
        return value

    @field_validator("api_keys")
    @classmethod
    def _keys(cls, value: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        for key in value:
            secret = key.get_secret_value()
            if len(secret) < 16 or not secret.isprintable() or not secret.isascii():
                raise ValueError("every API key must be at least 16 printable ASCII characters")
        return value
