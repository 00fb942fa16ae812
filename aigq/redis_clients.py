"""The one way to open a Redis connection pool from :class:`~aigq.settings.RedisSettings`."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from aigq.errors import ServiceError
from aigq.settings import RedisSettings


def open_redis(
    settings: RedisSettings,
    *,
    timeout_s: float | None = None,
    retries: int | None = None,
    max_connections: int | None = None,
) -> Redis:
    """A pooled ``redis.asyncio`` client; use it as ``async with`` or call ``aclose()``.

    ``timeout_s`` replaces ``settings.socket_timeout_s`` (connect and read); ``retries``
    replaces redis-py's default of 10 jittered retries per command (a latency-bound reader
    wants 0: one failed attempt, then an answer); ``max_connections`` caps the pool.
    """
    password = settings.password.get_secret_value() if settings.password else None
    timeout = settings.socket_timeout_s if timeout_s is None else timeout_s
    extra: dict[str, Any] = {}
    if settings.tls and settings.ssl_ca_certs is not None:
        extra["ssl_ca_certs"] = str(settings.ssl_ca_certs)
    if retries is not None:
        extra["retry"] = Retry(NoBackoff(), retries)
    if max_connections is not None:
        extra["max_connections"] = max_connections
    return Redis.from_url(
        settings.url,
        password=password,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        **extra,
    )


async def server_version(settings: RedisSettings) -> str:
    """PING the server and return its version; raise ServiceError when it does not answer."""
    try:
        async with open_redis(settings) as client:
            await client.ping()
            info = await client.info("server")
    except (RedisError, OSError) as exc:
        raise ServiceError(f"Redis at {settings.redacted_url()} does not answer: {exc}") from exc
    return str(info.get("redis_version", "unknown"))


async def delete_prefix(settings: RedisSettings, prefix: str, batch: int = 1_000) -> int:
    """Delete every key that starts with ``prefix`` (a run's, a test's, a benchmark's own keys),
    found with ``SCAN`` and deleted ``batch`` at a time; how many were deleted. ``prefix`` is
    matched as a glob, so it must hold none of ``*?[]\\``."""
    if not prefix or any(ch in prefix for ch in "*?[]\\"):
        raise ValueError(f"a key prefix to delete must be plain, non-empty text: {prefix!r}")
    client = open_redis(settings)
    deleted = 0
    try:
        keys: list[bytes] = []
        async for key in client.scan_iter(match=f"{prefix}*", count=batch):
            keys.append(key)
            if len(keys) >= batch:
                deleted += await client.delete(*keys)
                keys.clear()
        if keys:
            deleted += await client.delete(*keys)
    except (RedisError, OSError) as exc:
        raise ServiceError(f"deleting the {prefix!r} keys failed: {exc}") from exc
    finally:
        await client.aclose()
    return deleted
