"""The one Redis connection helper, against the real Redis."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from aigq.dev.probe import free_port
from aigq.errors import ServiceError
from aigq.redis_clients import open_redis, server_version
from aigq.settings import RedisSettings

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]


async def test_server_version_of_the_real_redis(redis_settings: RedisSettings) -> None:
    version = await server_version(redis_settings)
    assert version.split(".")[0].isdigit()


async def test_pooled_client_reads_and_writes(redis: tuple[Redis, str]) -> None:
    client, prefix = redis
    await client.set(f"{prefix}k", "värde", ex=60)
    assert await client.get(f"{prefix}k") == "värde".encode()
    assert 0 < await client.ttl(f"{prefix}k") <= 60


async def test_unreachable_redis_is_a_service_error() -> None:
    settings = RedisSettings(url=f"redis://:pw@127.0.0.1:{free_port()}/0", socket_timeout_s=0.5)
    with pytest.raises(ServiceError, match=r"redis://:\*\*\*@127\.0\.0\.1:\d+/0 does not answer"):
        await server_version(settings)


async def test_client_is_an_async_context_manager(redis_settings: RedisSettings) -> None:
    async with open_redis(redis_settings) as client:
        assert await client.ping()
    await client.connection_pool.disconnect()  # closed already: a no-op, not an error
