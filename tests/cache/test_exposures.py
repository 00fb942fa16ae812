"""Exposure logging and hint clicks (issue 19): the buffer and the encoding alone, then the API
in process (httpx over ASGI, with its lifespan) against the real broker and Redis."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from aigq.codec import decode
from aigq.dev.probe import free_port, wait_until
from aigq.errors import ConfigError
from aigq.events import HintClickEvent, HintExposureEvent, ShownQuery
from aigq.redis_clients import open_redis
from aigq.settings import KafkaSettings, RedisSettings, TopicSettings
from cache.api import ReadAPI
from cache.bench_data import BenchData, delete, load
from cache.compose import Hint
from cache.endpoint import request_id
from cache.exposure_record import encode_exposure, exposure_of
from cache.exposures import ExposureBuffer, ExposureLog
from cache.hints import HintResult
from cache.recent import RecentTriggers
from cache.serve_metrics import EXPOSURE_OUTCOMES
from cache.settings import HintSettings, ServeSettings
from cache.u2q import U2QRun, U2QStore
from cache.x2q import X2QStore
from tests.cache.conftest import serve_in_thread
from tests.conftest import ReadTopics

NOW = int(time.time() * 1000)
KEY = "click-key-0123456789"
RUN = U2QRun(("u2q one", "u2q two"), "direct-3", 12, NOW - 9_000, NOW - 8_000, "drift")


def _counts() -> dict[str, int]:
    return dict.fromkeys(EXPOSURE_OUTCOMES, 0)


def _result(hints: list[Hint], run: U2QRun | None = RUN, user: str = "u1") -> HintResult:
    return HintResult(user, 10, hints, run, (), None, False, NOW)


# --- the buffer and the encoding (no Kafka) ---------------------------------------------------


def test_the_buffer_keeps_its_capacity_and_counts_what_it_drops() -> None:
    counts = _counts()
    buffer = ExposureBuffer(3, counts)
    buffer.kafka_down = False
    records = [exposure_of(_result([]), f"r{n}") for n in range(5)]
    assert [buffer.append(r) for r in records] == [True, True, True, False, False]
    assert len(buffer) == 3
    assert counts["buffer_full"] == 2 and counts["kafka_unavailable"] == 0
    assert [r.request_id for r in buffer.take(2)] == ["r0", "r1"]  # oldest first
    assert buffer.append(records[3])
    assert [r.request_id for r in buffer.take(10)] == ["r2", "r3"]
    assert buffer.take(10) == [] and len(buffer) == 0


def test_while_kafka_is_down_a_full_buffer_drops_as_kafka_unavailable() -> None:
    counts = _counts()
    buffer = ExposureBuffer(1, counts)
    assert buffer.kafka_down  # until the producer has connected
    assert buffer.append(exposure_of(_result([]), "a"))
    assert not buffer.append(exposure_of(_result([]), "b"))
    buffer.kafka_down = False
    assert not buffer.append(exposure_of(_result([]), "c"))
    assert (counts["kafka_unavailable"], counts["buffer_full"]) == (1, 1)
    assert buffer.drain() == 1 and len(buffer) == 0
    with pytest.raises(ValueError, match="capacity"):
        ExposureBuffer(0, counts)


def test_the_log_appends_without_kafka_and_never_raises() -> None:
    """The request path's call, with no producer at all: it only fills the buffer."""
    counts = _counts()
    serve = ServeSettings(log_exposures=True, exposure_buffer=2)
    log = ExposureLog(KafkaSettings(), TopicSettings(), serve, counts)
    for n in range(5):
        log.log(_result([Hint("q", "u2q")]), f"r{n}")
    assert len(log.buffer) == 2
    assert counts == {**_counts(), "kafka_unavailable": 3}


def test_an_exposure_decodes_to_the_event_pydantic_builds() -> None:
    hints = [
        Hint("running shoes", "history"),
        Hint("gore-tex trail shoes", "x2q", "item:sku-1"),
        Hint("trail running shoes", "u2q"),
        Hint("popular one", "popular"),
    ]
    value = encode_exposure(exposure_of(_result(hints), "req-1"))
    assert value is not None
    assert decode(value) == HintExposureEvent(
        user_id="u1",
        ts=NOW,
        request_id="req-1",
        shown=tuple(
            ShownQuery(query=h.query, source=h.source, position=i) for i, h in enumerate(hints)
        ),
        model_version="direct-3",
    )


def test_model_version_whenever_the_list_was_composed_with_a_run() -> None:
    # the run's queries repeated the history: shown as history, still composed with the run
    history_only = encode_exposure(exposure_of(_result([Hint("a", "history")]), "r"))
    assert history_only is not None
    decoded = decode(history_only)
    assert isinstance(decoded, HintExposureEvent) and decoded.model_version == "direct-3"
    no_run = encode_exposure(exposure_of(_result([Hint("a", "u2q")], run=None), "r"))
    assert no_run is not None and "model_version" not in no_run.decode()


@pytest.mark.parametrize(
    ("hints", "rid", "run"),
    [
        ([], "r", RUN),  # empty lists are not logged
        ([Hint("nul\x00byte", "u2q")], "r", RUN),
        ([Hint(" padded", "u2q")], "r", RUN),
        ([Hint("q" * 1025, "u2q")], "r", RUN),
        ([Hint("q", "u2q")] * 65, "r", RUN),
        ([Hint("q", "u2q")], "", RUN),
        ([Hint("q", "u2q")], "r" * 257, RUN),
        ([Hint("q", "u2q")], "r", dataclasses.replace(RUN, model_version=" v1")),
    ],
)
def test_what_breaks_the_events_bounds_is_not_encoded(
    hints: list[Hint], rid: str, run: U2QRun
) -> None:
    assert encode_exposure(exposure_of(_result(hints, run), rid)) is None


def test_request_id_echoes_a_valid_header_else_makes_one() -> None:
    assert request_id(b"4bf92f35-77b3:4a5@x+y=z_.") == "4bf92f35-77b3:4a5@x+y=z_."
    made = {request_id(given) for given in (None, b"", b"bad id", b"x" * 257, b"\xff")}
    assert len(made) == 5
    assert all(len(r) == 32 and int(r, 16) >= 0 for r in made)


def test_logging_wants_lists_an_exposure_can_hold() -> None:
    with pytest.raises(ConfigError, match="AIGQ_HINTS_MAX_K: at most 64"):
        ReadAPI(
            HintSettings(max_k=65),
            ServeSettings(log_exposures=True),
            RedisSettings(),
            kafka=KafkaSettings(),
            topics=TopicSettings(),
        )
    assert ReadAPI(HintSettings(max_k=65), ServeSettings(), RedisSettings()).exposures is None


# --- the API against the broker and Redis -----------------------------------------------------


async def _seed(client: Redis, prefix: str) -> None:
    """u1: a u2q run, a trigger newer than it with an x2q entry; no popular queries."""
    await U2QStore(client, prefix=prefix).write("u1", RUN)
    await RecentTriggers(client, prefix=prefix).record_many([("u1", "item", "sku-7", NOW)])
    await X2QStore(client, prefix=prefix).publish([("item", "sku-7", ["x2q one"])])


@asynccontextmanager
async def _running(app: ReadAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        app.lifespan(),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as http,
    ):
        yield http


def _app(
    redis_settings: RedisSettings,
    prefix: str,
    kafka: KafkaSettings,
    topics: TopicSettings,
    **serve: Any,
) -> ReadAPI:
    return ReadAPI(
        HintSettings(default_k=4, max_k=5),
        ServeSettings(log_exposures=True, **serve),
        redis_settings.model_copy(update={"key_prefix": prefix}),
        kafka=kafka,
        topics=topics,
    )


async def _connected(app: ReadAPI) -> None:
    assert app.exposures is not None
    for _ in range(200):
        if app.exposures.producer is not None:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the exposure log did not connect within 10 s")


def _exposures(app: ReadAPI) -> dict[str, int]:
    return {k: v for k, v in app.serve_metrics.exposures.items() if v}


CLICK = {"user_id": "u1", "request_id": "req-1", "query": "u2q one", "source": "u2q"}


@pytest.mark.integration
@pytest.mark.asyncio
async def test_a_served_list_is_one_exposure_matching_the_response(
    redis: tuple[Redis, str],
    redis_settings: RedisSettings,
    kafka: KafkaSettings,
    topics: TopicSettings,
    read_topics: ReadTopics,
) -> None:
    client, prefix = redis
    await _seed(client, prefix)
    app = _app(redis_settings, prefix, kafka, topics)
    before = int(time.time() * 1000)
    async with _running(app) as http:
        first = await http.get("/v1/hints/u1", headers={"X-Request-Id": "req-one"})
        second = await http.get("/v1/hints/u1?k=1")  # the x2q hint alone, run read all the same
        empty = await http.get("/v1/hints/never-seen")  # nothing stored, no popular set
        head = await http.head("/v1/hints/u1")  # nothing is shown
        assert [r.status_code for r in (first, second, empty, head)] == [200] * 4
        metrics = (await http.get("/metrics")).text
        assert "aigq_serve_exposure_buffer " in metrics
    # leaving the lifespan flushed what was buffered
    after = int(time.time() * 1000)
    assert _exposures(app) == {"sent": 2}
    bodies = [first.json(), second.json()]
    assert bodies[0]["request_id"] == "req-one"
    assert len(bodies[1]["request_id"]) == 32
    assert len(empty.json()["request_id"]) == 32 and empty.json()["hints"] == []
    records = await asyncio.to_thread(read_topics, [topics.name("hint_exposure")], 2)
    assert len(records) == 2
    by_id = {}
    for record in records:
        event = decode(record.value)
        assert isinstance(event, HintExposureEvent) and record.key == b"u1"
        assert before <= event.ts <= after
        by_id[event.request_id] = event
    for body in bodies:
        event = by_id[body["request_id"]]
        assert event.user_id == body["user_id"]
        assert [(s.query, s.source, s.position) for s in event.shown] == [
            (h["query"], h["source"], n) for n, h in enumerate(body["hints"])
        ]
    assert [s.source for s in by_id["req-one"].shown] == ["x2q", "u2q", "u2q"]
    assert by_id["req-one"].model_version == bodies[0]["u2q"]["model_version"] == "direct-3"
    assert by_id[bodies[1]["request_id"]].model_version == bodies[1]["u2q"]["model_version"]


@pytest.mark.integration
@pytest.mark.asyncio
async def test_a_click_lands_on_hint_click(
    redis: tuple[Redis, str],
    redis_settings: RedisSettings,
    kafka: KafkaSettings,
    topics: TopicSettings,
    read_topics: ReadTopics,
) -> None:
    _, prefix = redis
    app = _app(redis_settings, prefix, kafka, topics)
    async with _running(app) as http:
        await _connected(app)
        before = int(time.time() * 1000)
        now = await http.post("/v1/hint-clicks", json=CLICK | {"position": 1})
        after = int(time.time() * 1000)
        dated = await http.post(
            "/v1/hint-clicks", json=CLICK | {"user_id": "u2", "position": 0, "ts": NOW}
        )
        assert (now.status_code, now.json()) == (202, {"status": "accepted"})
        assert dated.status_code == 202
        spec = (await http.get("/openapi.json")).json()
        operation = spec["paths"]["/v1/hint-clicks"]["post"]
        assert set(operation["responses"]) == {"202", "422", "503"}
        body = operation["requestBody"]["content"]["application/json"]["schema"]
        assert set(body["required"]) == {"user_id", "request_id", "query", "source", "position"}
        metrics = (await http.get("/metrics")).text
        assert 'aigq_serve_clicks_total{outcome="accepted"} 2.0' in metrics
    records = await asyncio.to_thread(read_topics, [topics.name("hint_click")], 2)
    events = {r.key: decode(r.value) for r in records}
    assert len(records) == 2 and set(events) == {b"u1", b"u2"}
    clicked = events[b"u1"]
    assert isinstance(clicked, HintClickEvent)
    assert (clicked.request_id, clicked.query, clicked.source, clicked.position) == (
        "req-1", "u2q one", "u2q", 1,
    )  # fmt: skip
    assert before <= clicked.ts <= after
    assert events[b"u2"].ts == NOW


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (CLICK, "body.position"),  # missing
        (CLICK | {"position": 64}, "body.position"),
        (CLICK | {"position": "1"}, "body.position"),
        (CLICK | {"position": 1, "user_id": "a b"}, "body.user_id"),
        (CLICK | {"position": 1, "query": ""}, "body.query"),
        (CLICK | {"position": 1, "query": "   "}, "body.query"),  # empty once stripped
        (CLICK | {"position": 1, "query": "a\x00b"}, "body.query"),
        (CLICK | {"position": 1, "ts": 1_700_000_000}, "body.ts"),  # seconds
        ("not json", "body"),
        (CLICK | {"position": 1, "query": "q" * 20_000}, "body: larger than 16384 bytes"),
    ],
)
@pytest.mark.integration
@pytest.mark.asyncio
async def test_a_bad_click_is_a_422_naming_the_field(
    redis_settings: RedisSettings, body: Any, field: str
) -> None:
    """Refused before Kafka is needed: the broker here is a closed port."""
    kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}")
    app = _app(redis_settings, "test:none:", kafka, TopicSettings())
    async with _running(app) as http:
        if isinstance(body, str):
            response = await http.post("/v1/hint-clicks", content=body)
        else:
            response = await http.post("/v1/hint-clicks", json=body)
        assert response.status_code == 422
        assert response.json()["error"] == "invalid request"
        assert any(line.startswith(field) for line in response.json()["detail"])


@pytest.mark.integration
@pytest.mark.asyncio
async def test_with_kafka_unreachable_reads_still_answer_and_drops_are_counted(
    redis: tuple[Redis, str], redis_settings: RedisSettings
) -> None:
    client, prefix = redis
    await _seed(client, prefix)
    closed = KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}")
    app = _app(
        redis_settings, prefix, closed, TopicSettings(), exposure_buffer=2, exposure_flush_s=1
    )
    async with _running(app) as http:
        for _ in range(5):
            response = await http.get("/v1/hints/u1")
            assert response.status_code == 200 and len(response.json()["hints"]) == 3
        assert _exposures(app) == {"kafka_unavailable": 3}  # the buffer holds two
        click = await http.post("/v1/hint-clicks", json=CLICK | {"position": 0})
        assert click.status_code == 503
        assert click.headers["retry-after"] == "1"
        assert click.json()["error"] == "Kafka is unavailable; retry"
        metrics = (await http.get("/metrics")).text
        assert 'aigq_serve_exposures_total{outcome="kafka_unavailable"} 3.0' in metrics
        assert 'aigq_serve_clicks_total{outcome="kafka_unavailable"} 1.0' in metrics
        assert (await http.get("/readyz")).status_code == 200  # readiness is Redis only
    assert _exposures(app) == {"kafka_unavailable": 5}  # and the two never sent


@pytest.mark.integration
@pytest.mark.asyncio
async def test_with_logging_off_clicks_are_503_and_not_in_the_spec(
    redis: tuple[Redis, str], redis_settings: RedisSettings
) -> None:
    client, prefix = redis
    await _seed(client, prefix)
    app = ReadAPI(
        HintSettings(), ServeSettings(), redis_settings.model_copy(update={"key_prefix": prefix})
    )
    assert app.exposures is None
    async with _running(app) as http:
        click = await http.post("/v1/hint-clicks", json=CLICK | {"position": 0})
        assert click.status_code == 503 and click.headers["retry-after"] == "1"
        assert "click logging is off" in click.json()["error"]
        assert "/v1/hint-clicks" not in (await http.get("/openapi.json")).json()["paths"]
        body = (await http.get("/v1/hints/u1", headers={"X-Request-Id": "abc"})).json()
        assert body["request_id"] == "abc"
        assert 'aigq_serve_exposures_total{outcome="sent"} 0.0' in (await http.get("/metrics")).text


@pytest.mark.integration
@pytest.mark.asyncio
async def test_the_click_endpoint_wants_the_api_key_first(
    redis: tuple[Redis, str],
    redis_settings: RedisSettings,
    kafka: KafkaSettings,
    topics: TopicSettings,
) -> None:
    _, prefix = redis
    app = _app(redis_settings, prefix, kafka, topics, api_keys=KEY)
    async with _running(app) as http:
        await _connected(app)
        good = CLICK | {"position": 0}
        missing = await http.post("/v1/hint-clicks", json=good)
        assert missing.status_code == 401
        assert missing.json() == {"error": "missing or invalid API key", "detail": []}
        wrong = await http.post("/v1/hint-clicks", json=good, headers={"X-API-Key": "x" * 20})
        assert wrong.status_code == 401
        # the key is checked before the body is read
        assert (await http.post("/v1/hint-clicks", content="not json")).status_code == 401
        ok = await http.post("/v1/hint-clicks", json=good, headers={"X-API-Key": KEY})
        assert ok.status_code == 202
        operation = (await http.get("/openapi.json")).json()["paths"]["/v1/hint-clicks"]["post"]
        assert operation["security"] == [{"ApiKey": []}]
        assert "401" in operation["responses"]
        metrics = (await http.get("/metrics")).text
        assert 'aigq_serve_clicks_total{outcome="unauthorized"} 3.0' in metrics


@pytest.fixture
def logged_server(
    redis_settings: RedisSettings, kafka: KafkaSettings, topics: TopicSettings
) -> Iterator[tuple[ReadAPI, str]]:
    """The API served as ``aigq serve`` serves it, logging exposures, over 1,000 users."""
    prefix = f"test:{uuid.uuid4().hex}:"

    async def run(job: Any) -> Any:
        async with open_redis(redis_settings) as client:
            return await job(client)

    asyncio.run(run(lambda c: load(c, BenchData(prefix, 1_000), x2q_triggers=500)))
    app = ReadAPI(
        HintSettings(max_k=20),
        ServeSettings(log_exposures=True),
        redis_settings.model_copy(update={"key_prefix": prefix}),
        kafka=kafka,
        topics=topics,
    )
    try:
        for port in serve_in_thread(app):
            url = f"http://127.0.0.1:{port}"
            assert wait_until(
                lambda: app.exposures is not None and app.exposures.producer is not None, 10
            )
            yield app, url
    finally:
        asyncio.run(run(lambda c: delete(c, prefix)))


@pytest.mark.integration
def test_the_spec_with_logging_on_is_fuzzed_clean(logged_server: tuple[ReadAPI, str]) -> None:
    """The fuzz of tests/cache/test_api_fuzz.py, on the spec that has the click endpoint."""
    import schemathesis
    from schemathesis.generation.modes import GenerationMode

    from tests.cache.test_api_fuzz import fuzz

    app, url = logged_server
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    assert "/v1/hint-clicks" in schema.raw_schema["paths"]
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        assert fuzz(schema, mode) >= 100
    clicks = app.serve_metrics.clicks
    assert clicks["accepted"] > 0 and clicks["bad_request"] > 0
    assert clicks["kafka_unavailable"] == 0


@pytest.mark.integration
def test_bench_serve_measures_the_log_beside_the_api(redis_settings: RedisSettings) -> None:
    """A short ``aigq bench serve --exposures``, for the plumbing; figures are not checked."""
    args = ["--users", "1000", "--rate", "200", "--duration", "1", "--warmup", "0"]
    done = subprocess.run(
        [sys.executable, "-m", "shell", "bench", "serve", *args, "--rounds", "1", "--exposures"],
        cwd=Path(__file__).resolve().parents[2],
        env=os.environ | {"AIGQ_REDIS_URL": redis_settings.url},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = " ".join(done.stdout.split())  # rich wraps long lines
    assert "API flat out (uvicorn, exposures logged)" in out
    assert "exposures logged / not: flat out" in out
    sent = re.search(r"exposures: ([\d,]+) sent to Kafka of ([\d,]+) non-empty lists", out)
    assert sent is not None and sent[1] == sent[2] and sent[1] != "0"
    assert "dropped: none" in out
