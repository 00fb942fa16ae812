"""The pipelined read connection against the real Redis: order, errors, loss, late replies."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.asyncio import Redis

from aigq.dev.probe import free_port
from aigq.settings import RedisSettings
from cache.pipe import RedisPipe, ReplyError, pack

pytestmark = pytest.mark.integration


def test_pack() -> None:
    assert pack("GET", "k") == b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"
    assert pack("SET", b"\x00\xff", 12, "é") == (
        b"*4\r\n$3\r\nSET\r\n$2\r\n\x00\xff\r\n$2\r\n12\r\n$2\r\n\xc3\xa9\r\n"
    )


@pytest.mark.asyncio
async def test_many_calls_in_flight_get_their_own_replies(
    redis: tuple[Redis, str], redis_settings: RedisSettings
) -> None:
    client, prefix = redis
    await client.mset({f"{prefix}{i}": f"value {i}" for i in range(500)})
    async with RedisPipe(redis_settings, 5.0) as pipe:  # database 15, from the URL
        replies = await asyncio.gather(*(pipe.call("GET", f"{prefix}{i}") for i in range(500)))
        assert replies == [f"value {i}".encode() for i in range(500)]
        assert await pipe.call("GET", f"{prefix}missing") is None
        error = await pipe.call("INCR", f"{prefix}0")
        assert isinstance(error, ReplyError)
        assert "not an integer" in str(error)
        assert await pipe.call("PING") == b"PONG"  # an error reply leaves the pipe usable


@pytest.mark.asyncio
async def test_a_reply_after_its_caller_gave_up_is_dropped_in_order(
    redis: tuple[Redis, str], redis_settings: RedisSettings
) -> None:
    client, prefix = redis
    async with RedisPipe(redis_settings, 5.0) as pipe:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await pipe.call("BLPOP", f"{prefix}empty", 1)
        await client.set(f"{prefix}k", "v")
        # The BLPOP's nil reply comes first and goes to nobody; GET gets its own.
        assert await pipe.call("GET", f"{prefix}k") == b"v"


@pytest.mark.asyncio
async def test_a_missed_deadline_fails_the_call_and_drops_the_connection(
    redis: tuple[Redis, str], redis_settings: RedisSettings
) -> None:
    _, prefix = redis
    async with RedisPipe(redis_settings, 0.2) as pipe:
        own_id = await pipe.call("CLIENT", "ID")
        started = time.monotonic()
        slow = asyncio.ensure_future(pipe.call("BLPOP", f"{prefix}empty", 2))
        behind = asyncio.ensure_future(pipe.call("PING"))  # queued behind the blocked command
        with pytest.raises(TimeoutError, match=r"no reply from Redis in 0\.2s"):
            await slow
        with pytest.raises((TimeoutError, ConnectionError)):
            await behind
        assert time.monotonic() - started < 1.0
        assert await pipe.call("PING") == b"PONG"  # a new connection
        assert await pipe.call("CLIENT", "ID") != own_id


@pytest.mark.asyncio
async def test_a_hung_server_times_out_on_connect_or_reply(hung_port: int) -> None:
    async with RedisPipe(RedisSettings(url=f"redis://127.0.0.1:{hung_port}/3"), 0.15) as pipe:
        for _ in range(2):  # SELECT on connect gets no answer, then a fresh try the same
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                await pipe.call("PING")
            assert time.monotonic() - started < 1.0


@pytest.mark.asyncio
async def test_a_lost_connection_fails_what_is_in_flight_then_reconnects(
    redis: tuple[Redis, str], redis_settings: RedisSettings
) -> None:
    client, prefix = redis
    async with RedisPipe(redis_settings, 5.0) as pipe:
        own_id = await pipe.call("CLIENT", "ID")
        blocked = asyncio.ensure_future(pipe.call("BLPOP", f"{prefix}empty", 5))
        await asyncio.sleep(0.05)
        assert await client.client_kill_filter(_id=own_id) == 1
        with pytest.raises(ConnectionError, match="lost"):
            await blocked
        assert await pipe.call("PING") == b"PONG"
        assert await pipe.call("CLIENT", "ID") != own_id


@pytest.mark.asyncio
async def test_url_database_and_password(redis_settings: RedisSettings) -> None:
    base = redis_settings.url.rsplit("/", 1)[0]
    async with RedisPipe(RedisSettings(url=f"{base}/15"), 5.0) as pipe:
        assert b" db=15 " in await pipe.call("CLIENT", "INFO")
    # The local Redis has no password: AUTH is refused, and that is a connection error.
    wrong = RedisSettings(url=f"{base}/15", password="not-the-password")  # type: ignore[arg-type]
    async with RedisPipe(wrong, 5.0) as pipe:
        with pytest.raises(ConnectionError, match="refused AUTH"):
            await pipe.call("PING")


@pytest.mark.asyncio
async def test_unreachable_is_an_os_error_every_time() -> None:
    async with RedisPipe(RedisSettings(url=f"redis://127.0.0.1:{free_port()}/0"), 5.0) as pipe:
        for _ in range(2):
            with pytest.raises(OSError):
                await pipe.call("PING")
    await pipe.aclose()  # twice is fine
