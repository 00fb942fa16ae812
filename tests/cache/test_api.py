"""The read API in process (httpx over ASGI), against the real Redis."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from redis.asyncio import Redis
from structlog.testing import capture_logs

from aigq.dev.probe import free_port
from aigq.settings import RedisSettings
from cache.api import HintsOut, ReadAPI
from cache.popular import PopularQueries
from cache.recent import RecentTriggers
from cache.settings import HintSettings, ServeSettings
from cache.u2q import U2QRun, U2QStore
from cache.x2q import X2QStore

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

NOW = int(time.time() * 1000)
KEY = "k" * 16 + "-secret-one"


@pytest_asyncio.fixture
async def api(
    redis: tuple[Redis, str], redis_settings: RedisSettings
) -> AsyncIterator[tuple[ReadAPI, httpx.AsyncClient]]:
    """The app on the test database with u1 seeded (u2q run, a trigger, x2q, popular)."""
    client, prefix = redis
    await U2QStore(client, prefix=prefix).write(
        "u1", U2QRun(("u2q one", "u2q two"), "direct-3", 12, NOW - 9_000, NOW - 8_000, "drift")
    )
    await RecentTriggers(client, prefix=prefix).record_many([("u1", "item", "sku-7", NOW)])
    await X2QStore(client, prefix=prefix).publish([("item", "sku-7", ["x2q one"])])
    await PopularQueries(client, prefix=prefix).write([("popular one", 2)])
    app = ReadAPI(
        HintSettings(default_k=4, max_k=5),
        ServeSettings(),
        redis_settings.model_copy(update={"key_prefix": prefix}),
    )
    async with (
        app.lifespan(),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as http,
    ):
        yield app, http


async def test_hints_response(api: tuple[ReadAPI, httpx.AsyncClient]) -> None:
    _, http = api
    response = await http.get("/v1/hints/u1", params={"k": 3})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    HintsOut.model_validate(body)  # the hand-written body matches the documented model
    assert body["hints"] == [
        {"query": "x2q one", "source": "x2q", "trigger": "item:sku-7"},
        {"query": "u2q one", "source": "u2q", "trigger": None},
        {"query": "u2q two", "source": "u2q", "trigger": None},
    ]
    assert body["u2q"]["model_version"] == "direct-3"
    assert body["u2q"]["session_version"] == 12
    assert body["u2q"]["reason"] == "drift"
    # NOW is taken when the module is imported: a long run reaches this test minutes later
    assert 8_000 <= body["u2q"]["age_ms"] <= int(time.time() * 1000) - NOW + 8_000
    assert body["fallback"] is None
    assert body["degraded"] is False
    assert body["user_id"] == "u1"
    assert body["k"] == 3
    assert len(body["request_id"]) == 32  # made here: the request carried no X-Request-Id
    echoed = await http.get("/v1/hints/u1", headers={"X-Request-Id": "req-42"})
    assert echoed.json()["request_id"] == "req-42"


async def test_unknown_user_falls_back_and_k_is_capped(
    api: tuple[ReadAPI, httpx.AsyncClient],
) -> None:
    _, http = api
    assert (await http.get("/v1/hints/u1?k=0003")).json()["k"] == 3
    assert (await http.get("/v1/hints/u1?k=2&k=9&other=x")).json()["k"] == 5  # the last k
    body = (await http.get("/v1/hints/never-seen", params={"k": "9" * 5000})).json()
    assert body["k"] == 5
    assert body["hints"] == [{"query": "popular one", "source": "popular", "trigger": None}]
    assert body["fallback"] == "popular"
    assert body["u2q"] is None


async def test_an_undecodable_u2q_head_is_a_degraded_popular_fallback(
    api: tuple[ReadAPI, httpx.AsyncClient], redis: tuple[Redis, str]
) -> None:
    """Issue 15: it used to be an empty list."""
    _, http = api
    client, prefix = redis
    await client.lpush(f"{prefix}u2q:broken", b'{"v":3,"w":1,"q":["cut')
    response = await http.get("/v1/hints/broken")
    assert response.status_code == 200
    body = response.json()
    assert body["hints"] == [{"query": "popular one", "source": "popular", "trigger": None}]
    assert (body["fallback"], body["degraded"], body["u2q"]) == ("popular", True, None)
    metrics = (await http.get("/metrics")).text
    assert 'aigq_serve_errors_total{kind="corrupt"} 1.0' in metrics
    assert 'aigq_serve_fallbacks_total{kind="popular"} 1.0' in metrics


async def test_default_k(api: tuple[ReadAPI, httpx.AsyncClient]) -> None:
    _, http = api
    body = (await http.get("/v1/hints/u1")).json()
    assert body["k"] == 4
    assert len(body["hints"]) == 3


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("/v1/hints/bad%20id", "user_id: must be 1 to 256 characters"),
        ("/v1/hints/" + "x" * 257, "user_id: must be"),
        ("/v1/hints/%C3%BC", "user_id: must be"),
        ("/v1/hints/a%2Fb", "user_id: must be"),
        ("/v1/hints/", "user_id: must be"),
        ("/v1/hints/u1?k=0", "k: must be a whole number >= 1"),
        ("/v1/hints/u1?k=000", "k: must be"),
        ("/v1/hints/u1?k=-3", "k: must be"),
        ("/v1/hints/u1?k=abc", "k: must be"),
        ("/v1/hints/u1?k=1.5", "k: must be"),
        ("/v1/hints/u1?k=", "k: must be"),
        ("/v1/hints/u1?k=%2B3", "k: must be"),
    ],
)
async def test_bad_requests_are_422_with_a_clear_message(
    api: tuple[ReadAPI, httpx.AsyncClient], path: str, problem: str
) -> None:
    _, http = api
    response = await http.get(path)
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "invalid request"
    assert any(line.startswith(problem) for line in body["detail"]), body
    assert "Traceback" not in response.text


async def test_both_problems_are_reported(api: tuple[ReadAPI, httpx.AsyncClient]) -> None:
    _, http = api
    detail = (await http.get("/v1/hints/a%20b?k=0")).json()["detail"]
    assert [line.split(":")[0] for line in detail] == ["user_id", "k"]


async def test_head_goes_through_fastapi_to_the_same_handler(
    api: tuple[ReadAPI, httpx.AsyncClient],
) -> None:
    _, http = api
    ok = await http.head("/v1/hints/u1")
    assert ok.status_code == 200
    assert int(ok.headers["content-length"]) > 0
    assert (await http.head("/v1/hints/a%20b")).status_code == 422


async def test_health_readiness_metrics_and_spec(api: tuple[ReadAPI, httpx.AsyncClient]) -> None:
    _, http = api
    assert (await http.get("/healthz")).json() == {"status": "ok"}
    assert (await http.get("/readyz")).json() == {"status": "ready"}
    await http.get("/v1/hints/u1")
    await http.get("/v1/hints/never-seen")
    await http.get("/v1/hints/bad%20id")
    metrics = (await http.get("/metrics")).text
    assert 'aigq_serve_requests_total{outcome="ok"} 2.0' in metrics
    assert 'aigq_serve_requests_total{outcome="bad_request"} 1.0' in metrics
    assert 'aigq_serve_hits_total{source="u2q"} 1.0' in metrics
    assert 'aigq_serve_hits_total{source="x2q"} 1.0' in metrics
    assert 'aigq_serve_hits_total{source="popular"} 1.0' in metrics
    assert 'aigq_serve_fallbacks_total{kind="popular"} 1.0' in metrics
    assert 'aigq_serve_request_seconds_count{outcome="ok"} 2.0' in metrics
    assert 'aigq_serve_request_seconds_bucket{le="+Inf",outcome="ok"} 2.0' in metrics
    assert 'aigq_serve_request_seconds_bucket{le="1.0",outcome="ok"} 2.0' in metrics
    assert 'aigq_serve_request_seconds_count{outcome="bad_request"} 1.0' in metrics
    spec = (await http.get("/openapi.json")).json()
    operation = spec["paths"]["/v1/hints/{user_id}"]["get"]
    params = {p["name"]: p for p in operation["parameters"]}
    assert params["user_id"]["schema"]["pattern"] == "^[A-Za-z0-9._:@+=-]{1,256}$"
    assert params["k"]["schema"] == {"type": "integer", "minimum": 1}
    assert set(operation["responses"]) == {"200", "422", "503"}
    assert "security" not in operation
    assert (await http.get("/nowhere")).json() == {"error": "Not Found", "detail": []}


async def test_api_keys(redis: tuple[Redis, str], redis_settings: RedisSettings) -> None:
    _, prefix = redis
    serve = ServeSettings(api_keys=f"{KEY}, {'z' * 20}", api_key_header="X-Key")  # type: ignore[arg-type]
    app = ReadAPI(HintSettings(), serve, redis_settings.model_copy(update={"key_prefix": prefix}))
    async with (
        app.lifespan(),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as http,
    ):
        missing = await http.get("/v1/hints/u1")
        assert missing.status_code == 401
        assert missing.json() == {"error": "missing or invalid API key", "detail": []}
        assert (await http.get("/v1/hints/u1", headers={"X-Key": "wrong"})).status_code == 401
        assert (await http.get("/v1/hints/a b", headers={"X-Key": "nope"})).status_code == 401
        assert (await http.head("/v1/hints/u1")).status_code == 401
        assert (await http.get("/v1/hints/u1", headers={"X-Key": KEY})).status_code == 200
        assert (await http.get("/v1/hints/u1", headers={"x-key": "z" * 20})).status_code == 200
        assert (await http.get("/healthz")).status_code == 200
        assert (await http.get("/readyz")).status_code == 200
        spec = (await http.get("/openapi.json")).json()
        assert spec["components"]["securitySchemes"]["ApiKey"] == {
            "type": "apiKey",
            "in": "header",
            "name": "X-Key",
        }
        operation = spec["paths"]["/v1/hints/{user_id}"]["get"]
        assert operation["security"] == [{"ApiKey": []}]
        assert "401" in operation["responses"]
        metrics = (await http.get("/metrics")).text
        assert 'aigq_serve_requests_total{outcome="unauthorized"} 4.0' in metrics
        assert KEY not in metrics and KEY not in str(spec)


async def test_redis_down_is_a_quick_503(hung_port: int) -> None:
    for url in (f"redis://127.0.0.1:{free_port()}/0", f"redis://127.0.0.1:{hung_port}/0"):
        app = ReadAPI(HintSettings(timeout_ms=200), ServeSettings(), RedisSettings(url=url))
        async with (
            app.lifespan(),
            httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as http,
        ):
            started = time.monotonic()
            response = await http.get("/v1/hints/u1")
            assert response.status_code == 503
            assert response.headers["retry-after"] == "1"
            assert response.json()["error"] in ("hint cache unavailable", "hint cache timed out")
            ready = await http.get("/readyz")
            assert ready.status_code == 503
            assert time.monotonic() - started < 1.5
            assert (await http.get("/healthz")).status_code == 200
            metrics = (await http.get("/metrics")).text
            assert 'aigq_serve_errors_total{kind="' in metrics


async def test_an_outage_is_logged_once_a_second_not_per_request() -> None:
    redis = RedisSettings(url=f"redis://127.0.0.1:{free_port()}/0")
    app = ReadAPI(HintSettings(timeout_ms=200), ServeSettings(), redis)
    async with (
        app.lifespan(),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as http,
    ):
        with capture_logs() as logs:
            for _ in range(5):
                assert (await http.get("/v1/hints/u1")).status_code == 503
        warnings = [entry for entry in logs if entry["event"] == "hints_unavailable"]
        assert len(warnings) == 1
        assert warnings[0]["log_level"] == "warning"
        assert "Connect call failed" in warnings[0]["error"] or "refused" in warnings[0]["error"]
        metrics = (await http.get("/metrics")).text
        assert 'aigq_serve_requests_total{outcome="redis"} 5.0' in metrics
