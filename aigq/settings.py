"""Shared settings: Kafka, Redis and topic names.

One frozen pydantic-settings object per component, each under its own ``AIGQ_<COMPONENT>_``
environment prefix. Nothing here reads the environment at import time: a ``main()`` calls
:func:`load` once and passes the objects down.

Variables (the README lists them all)::

    AIGQ_KAFKA_BOOTSTRAP_SERVERS  comma-separated ``host:port`` list (dev broker: 127.0.0.1:9092)
    AIGQ_KAFKA_SECURITY_PROTOCOL  PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL
    AIGQ_KAFKA_SASL_MECHANISM     PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512
    AIGQ_KAFKA_SASL_USERNAME / AIGQ_KAFKA_SASL_PASSWORD (secret)
    AIGQ_KAFKA_SSL_CAFILE / _SSL_CERTFILE / _SSL_KEYFILE / _SSL_PASSWORD (secret)
    AIGQ_KAFKA_BOOTSTRAP_TIMEOUT_MS  how long a client tries to reach a broker before failing
    AIGQ_REDIS_URL                ``redis://host:port/db`` or ``rediss://`` for TLS
    AIGQ_REDIS_PASSWORD (secret) / AIGQ_REDIS_SSL_CA_CERTS
    AIGQ_TOPICS_PREFIX            topic names are ``<prefix>.<kind>`` (default ``aigq``)
    AIGQ_TOPICS_PARTITIONS        partitions for topics that ``aigq dev up`` creates
    AIGQ_WEB_BIND / AIGQ_WEB_PORT  the Faust web server (loopback by default)
"""

from __future__ import annotations

import ipaddress
import os
import re
import ssl
from pathlib import Path
from typing import Any, Literal, Self, TypeVar
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from aigq.errors import ConfigError
from aigq.events import EVENT_TYPES, EventType

S = TypeVar("S", bound=BaseSettings)

TopicKind = EventType | Literal["dead_letter", "regenerate", "results", "models"]
_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,200}$")


# Variables that are gone, and what replaced them: a deployment that still sets one fails at
# start-up with the new name, instead of silently running on the default.
RENAMED = {
    "AIGQ_STREAM_CACHE_PREFIX": "AIGQ_REDIS_KEY_PREFIX",
    "AIGQ_GENERATE_CACHE_PREFIX": "AIGQ_REDIS_KEY_PREFIX",
    "AIGQ_HINTS_CACHE_PREFIX": "AIGQ_REDIS_KEY_PREFIX",
}


def load(cls: type[S], **overrides: Any) -> S:
    """Build a settings object from the environment (and ``overrides``), or raise ConfigError.

    The error names the environment variable, e.g. ``AIGQ_KAFKA_SECURITY_PROTOCOL: ...``; a
    variable that was renamed (:data:`RENAMED`) is an error that names its replacement.
    """
    gone = sorted(name for name in RENAMED if name in os.environ)
    if gone:
        raise ConfigError(
            "; ".join(f"{name} is no longer read: set {RENAMED[name]}" for name in gone)
        )
    try:
        return cls(**overrides)
    except ValidationError as exc:
        prefix = str(cls.model_config.get("env_prefix", ""))
        lines = []
        for err in exc.errors(include_url=False):
            field = "_".join(str(p) for p in err["loc"]).upper()
            name = f"{prefix}{field}" if field else cls.__name__
            lines.append(f"{name}: {err['msg'].removeprefix('Value error, ')}")
        raise ConfigError("; ".join(lines)) from exc


def _frozen(prefix: str) -> SettingsConfigDict:
    return SettingsConfigDict(env_prefix=prefix, frozen=True, extra="forbid")


def split_host_port(address: str, default_port: int) -> tuple[str, int]:
    """``"host:port"`` (or ``"[::1]:port"``) to ``(host, port)``; raise ValueError if malformed."""
    parsed = urlsplit(f"//{address.strip()}")
    try:
        port = parsed.port or default_port
    except ValueError as exc:
        raise ValueError(f"bad port in {address!r}") from exc
    if not parsed.hostname:
        raise ValueError(f"no host in {address!r}")
    return parsed.hostname, port


def is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def check_bind(value: str) -> str:
    """A listen address: an IP address or ``localhost`` (a field validator's body)."""
    try:
        ipaddress.ip_address(value)
    except ValueError:
        if value != "localhost":
            raise ValueError(f"{value!r} is not an IP address or 'localhost'") from None
    return value


class KafkaSettings(BaseSettings):
    """How every component reaches Kafka (any cluster in production, tansu locally)."""

    model_config = _frozen("AIGQ_KAFKA_")

    bootstrap_servers: str = Field("127.0.0.1:9092", description="comma-separated host:port")
    client_id: str = Field("aigq", description="the client id brokers log and quota by")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="how clients connect; SSL and SASL_SSL use the CA file below"
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="with SASL_*: needs the username and password too"
    )
    sasl_username: str | None = Field(None, description="SASL user")
    sasl_password: SecretStr | None = Field(None, description="SASL password (a secret)")
    ssl_cafile: Path | None = Field(None, description="CA bundle; the file must exist")
    ssl_certfile: Path | None = Field(None, description="client certificate (with the key)")
    ssl_keyfile: Path | None = Field(None, description="client key (with the certificate)")
    ssl_password: SecretStr | None = Field(None, description="the client key's password")
    request_timeout_ms: int = Field(30_000, ge=1_000, description="per request to a broker")
    bootstrap_timeout_ms: int = Field(30_000, ge=100, description="give up reaching a broker")
    fetch_max_wait_ms: int = Field(
        100,
        ge=1,
        le=60_000,
        description="consumers: the longest a fetch waits for records (the local broker "
        "answers only then, so it bounds every record's latency)",
    )

    @field_validator("bootstrap_servers")
    @classmethod
    def _servers(cls, value: str) -> str:
        servers = [s.strip() for s in value.split(",") if s.strip()]
        if not servers:
            raise ValueError("at least one host:port is needed")
        for server in servers:
            split_host_port(server, 9092)
        return ",".join(servers)

    @field_validator("ssl_cafile", "ssl_certfile", "ssl_keyfile")
    @classmethod
    def _file_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"{value} is not a readable file")
        return value

    @model_validator(mode="after")
    def _security_is_complete(self) -> Self:
        if self.security_protocol.startswith("SASL_") and not (
            self.sasl_mechanism and self.sasl_username and self.sasl_password
        ):
            raise ValueError(
                f"{self.security_protocol} needs AIGQ_KAFKA_SASL_MECHANISM, "
                "AIGQ_KAFKA_SASL_USERNAME and AIGQ_KAFKA_SASL_PASSWORD"
            )
        if bool(self.ssl_certfile) != bool(self.ssl_keyfile):
            raise ValueError("AIGQ_KAFKA_SSL_CERTFILE and AIGQ_KAFKA_SSL_KEYFILE go together")
        return self

    @property
    def servers(self) -> list[tuple[str, int]]:
        return [split_host_port(s, 9092) for s in self.bootstrap_servers.split(",")]

    def kafka_python_config(self) -> dict[str, Any]:
        """Keyword arguments for kafka-python's producer, consumer and admin clients."""
        config: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers.split(","),
            "client_id": self.client_id,
            "security_protocol": self.security_protocol,
            "request_timeout_ms": self.request_timeout_ms,
            "bootstrap_timeout_ms": self.bootstrap_timeout_ms,
        }
        if self.sasl_mechanism:
            config["sasl_mechanism"] = self.sasl_mechanism
            config["sasl_plain_username"] = self.sasl_username
            config["sasl_plain_password"] = (
                self.sasl_password.get_secret_value() if self.sasl_password else None
            )
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path = getattr(self, name)
            if path is not None:
                config[name] = str(path)
        if self.ssl_password is not None:
            config["ssl_password"] = self.ssl_password.get_secret_value()
        return config

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context of SSL / SASL_SSL (None otherwise), for the asyncio clients."""
        if self.security_protocol not in ("SSL", "SASL_SSL"):
            return None
        context = ssl.create_default_context(
            cafile=str(self.ssl_cafile) if self.ssl_cafile else None
        )
        if self.ssl_certfile and self.ssl_keyfile:
            password = self.ssl_password.get_secret_value() if self.ssl_password else None
            context.load_cert_chain(str(self.ssl_certfile), str(self.ssl_keyfile), password)
        return context

    def aiokafka_config(self) -> dict[str, Any]:
        """Keyword arguments for aiokafka's producer and consumer."""
        config: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "client_id": self.client_id,
            "security_protocol": self.security_protocol,
            "request_timeout_ms": self.request_timeout_ms,
            "ssl_context": self.ssl_context(),
        }
        if self.sasl_mechanism:
            config["sasl_mechanism"] = self.sasl_mechanism
            config["sasl_plain_username"] = self.sasl_username
            config["sasl_plain_password"] = (
                self.sasl_password.get_secret_value() if self.sasl_password else None
            )
        return config


class RedisSettings(BaseSettings):
    """Where the u2q/x2q cache lives. ``rediss://`` turns TLS on."""

    model_config = _frozen("AIGQ_REDIS_")

    url: str = Field(
        "redis://127.0.0.1:6379/0",
        description="rediss:// turns TLS on; printed with any password masked",
    )
    password: SecretStr | None = Field(None, description="overrides one in the URL (a secret)")
    ssl_ca_certs: Path | None = Field(None, description="CA bundle for rediss://")
    socket_timeout_s: float = Field(5.0, gt=0, description="connect and read timeout")
    key_prefix: str = Field(
        "aigq:",
        max_length=100,
        description="the prefix of every key the project keeps in Redis (u2q runs, recent "
        "triggers, history, x2q, popular, the regeneration budget): one setting for every "
        "process, so the writers and the read API cannot disagree",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"scheme must be redis://, rediss:// or unix://, got {value!r}")
        if parts.scheme != "unix" and not parts.hostname:
            raise ValueError(f"no host in {value!r}")
        return value

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "rediss"

    @property
    def host_port(self) -> tuple[str, int]:
        parts = urlsplit(self.url)
        return parts.hostname or "", parts.port or 6379

    def redacted_url(self) -> str:
        """The URL with any inline password replaced, safe to print and log."""
        parts = urlsplit(self.url)
        if parts.password is None:
            return self.url
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return parts._replace(netloc=netloc).geturl()


class TopicSettings(BaseSettings):
    """Topic names (``<prefix>.<kind>``) and the layout ``aigq dev up`` creates them with."""

    model_config = _frozen("AIGQ_TOPICS_")

    prefix: str = Field(
        "aigq",
        description="topics are <prefix>.search, .click, .hint_exposure, .hint_click, "
        ".dead_letter, .regenerate, .results, .models (model announcements)",
    )
    partitions: int = Field(8, ge=1, le=1024, description="for the topics `aigq dev up` creates")
    replication_factor: int = Field(1, ge=1, description="for the topics `aigq dev up` creates")

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not _TOPIC_NAME.match(value):
            raise ValueError(f"{value!r} is not a valid Kafka topic prefix ([A-Za-z0-9._-]+)")
        return value

    def name(self, kind: TopicKind) -> str:
        return f"{self.prefix}.{kind}"

    def all_names(self) -> list[str]:
        kinds: tuple[TopicKind, ...] = (
            *EVENT_TYPES, "dead_letter", "regenerate", "results", "models",
        )  # fmt: skip
        return [self.name(k) for k in kinds]


class WebSettings(BaseSettings):
    """Where a worker's Faust web server (health, readiness, tables) listens.

    Loopback by default: Faust itself binds 0.0.0.0, which would put a worker's tables on the
    network unless asked not to.
    """

    model_config = _frozen("AIGQ_WEB_")

    bind: str = Field("127.0.0.1", description="address to listen on (0.0.0.0: every interface)")
    port: int = Field(6066, ge=1, le=65535, description="Faust web port")

    @field_validator("bind")
    @classmethod
    def _bind(cls, value: str) -> str:
        return check_bind(value)

    def faust_options(self) -> dict[str, Any]:
        """Keyword arguments for ``faust.App`` that put its web server where these say."""
        host = "localhost" if self.bind in ("0.0.0.0", "::") else self.bind
        return {"web_bind": self.bind, "web_port": self.port, "web_host": host}
