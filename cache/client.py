"""The one way to open a Redis connection pool from :class:`~aigq.settings.RedisSettings`."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from aigq.errors import ServiceError
from aigq.settings import RedisSettings


def open_redis(settings: RedisSettings) -> Redis:
    """A pooled ``redis.asyncio`` client; use it as ``async with`` or call ``aclose()``."""
    password = settings.password.get_secret_value() if settings.password else None
    extra: dict[str, Any] = {}
    if settings.tls and settings.ssl_ca_certs is not None:
        extra["ssl_ca_certs"] = str(settings.ssl_ca_certs)
    return Redis.from_url(
        settings.url,
        password=password,
        socket_timeout=settings.socket_timeout_s,
        socket_connect_timeout=settings.socket_timeout_s,
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
