"""``aigq serve`` and ``aigq bench serve`` as commands, and the read path's settings."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError
from typer.testing import CliRunner

from aigq.dev.probe import free_port, wait_until
from aigq.errors import ConfigError
from aigq.settings import RedisSettings, load
from cache.settings import HintSettings, ServeSettings
from shell.cli import app
from tests.cache.conftest import get, serve_process

ROOT = Path(__file__).resolve().parents[2]


def test_serve_settings_default_to_loopback_and_secret_keys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    defaults = ServeSettings()
    assert (defaults.bind, defaults.port, defaults.workers) == ("127.0.0.1", 8080, 1)
    assert defaults.api_keys == ()
    monkeypatch.setenv("AIGQ_SERVE_API_KEYS", "first-key-0123456789, second-key-0123456789")
    monkeypatch.setenv("AIGQ_SERVE_BIND", "0.0.0.0")
    loaded = load(ServeSettings)
    assert [k.get_secret_value() for k in loaded.api_keys] == [
        "first-key-0123456789",
        "second-key-0123456789",
    ]
    assert "first-key" not in repr(loaded) and "first-key" not in str(loaded.model_dump())
    assert loaded.bind == "0.0.0.0"


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("AIGQ_SERVE_BIND", "example.com", "is not an IP address"),
        ("AIGQ_SERVE_API_KEYS", "short", "at least 16 printable ASCII"),
        ("AIGQ_SERVE_API_KEY_HEADER", "Bad Header", "is not a header name"),
        ("AIGQ_SERVE_WORKERS", "0", "greater than or equal to 1"),
    ],
)
def test_bad_serve_settings_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=f"{variable}: .*{message}"):
        load(ServeSettings)


def test_hint_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIGQ_HINTS_POPULAR_FALLBACK", "shoes, , rain jacket")
    assert load(HintSettings).popular_fallback == ("shoes", "rain jacket")
    assert HintSettings(timeout_ms=250).timeout_s == 0.25
    with pytest.raises(ValidationError, match="default_k"):
        HintSettings(default_k=20, max_k=10)
    with pytest.raises(ValidationError):
        HintSettings(triggers=-1)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """The CLI points logging at the runner's captured stderr, closed after it: undo that."""
    handlers, level = logging.getLogger().handlers[:], logging.getLogger().level
    raise_exceptions = logging.raiseExceptions
    yield
    structlog.reset_defaults()
    logging.getLogger().handlers[:] = handlers
    logging.getLogger().setLevel(level)
    logging.raiseExceptions = raise_exceptions


@pytest.mark.usefixtures("restore_logging")
def test_serve_refuses_bad_settings_before_starting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIGQ_HINTS_MAX_K", "0")
    result = CliRunner().invoke(app, ["serve", "--port", str(free_port())])
    assert result.exit_code == 1
    assert "AIGQ_HINTS_MAX_K" in result.output


def _listening(port: int) -> list[str]:
    """The local addresses (hex, as /proc/net/tcp writes them) listening on ``port``."""
    rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    found = []
    for row in rows:
        local, state = row.split()[1], row.split()[3]
        address, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
            found.append(address)
    return found


@pytest.mark.integration
def test_serve_listens_on_loopback_only_and_stops_on_sigterm(
    redis_settings: RedisSettings,
) -> None:
    port = free_port()
    env = os.environ | {
        "AIGQ_REDIS_URL": redis_settings.url,
        "AIGQ_SERVE_PORT": str(port),
        "AIGQ_REDIS_KEY_PREFIX": f"test:{uuid.uuid4().hex}:",
    }
    env.pop("AIGQ_SERVE_BIND", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "shell", "serve"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:

        def ready() -> bool:
            try:
                url = f"http://127.0.0.1:{port}/readyz"
                with urllib.request.urlopen(url, timeout=1) as response:
                    return bool(response.status == 200)
            except OSError:
                return False

        assert wait_until(ready, 30), "aigq serve did not get ready"
        assert _listening(port) == ["0100007F"]  # 127.0.0.1, and nothing else
        url = f"http://127.0.0.1:{port}/v1/hints/nobody"
        with urllib.request.urlopen(url, timeout=5) as response:
            assert b'"hints":[]' in response.read()
        proc.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal it caught
        assert proc.wait(15) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


@pytest.mark.integration
@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
def test_serve_answers_with_stderr_on_a_full_disk_and_redis_down() -> None:
    """Issue 15: every request logs a warning its write fails with ENOSPC; that must not
    cost a response (it used to: no answer to any hint request, /readyz a 500)."""
    env = {
        "AIGQ_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",  # nobody listens there
        "AIGQ_HINTS_TIMEOUT_MS": "200",
        "AIGQ_LOG_LEVEL": "DEBUG",
    }
    with Path("/dev/full").open("w") as full, serve_process(env, stderr=full) as port:
        statuses = [get(port, f"/v1/hints/u{i}")[0] for i in range(30)]
        assert statuses == [503] * 30  # not a hang, not a reset
        assert get(port, "/healthz")[0] == 200
        for _ in range(3):  # each one logs "not_ready"
            status, body = get(port, "/readyz")
            assert (status, orjson.loads(body)["error"]) == (503, "hint cache unavailable")
        status, text = get(port, "/metrics")
        assert status == 200
        samples = {
            (sample.name, tuple(sample.labels.values())): sample.value
            for family in text_string_to_metric_families(text.decode())
            for sample in family.samples
        }
        assert samples["aigq_serve_requests_total", ("redis",)] == 30
        # at least the first hints warning and three not_ready lines were dropped, counted
        assert samples["aigq_log_write_errors_total", ()] >= 4


@pytest.mark.integration
def test_bench_serve_runs_end_to_end_and_cleans_up(redis_settings: RedisSettings) -> None:
    """A short run, for the command's plumbing; its figures are not checked here."""
    env = os.environ | {"AIGQ_REDIS_URL": redis_settings.url}
    args = ["--users", "1000", "--rate", "200", "--duration", "1", "--warmup", "0"]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "shell",
            "bench",
            "serve",
            *args,
            "--rounds",
            "1",
            "--server",
            "uvicorn",
            "--server",
            "granian",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    for line in (
        "generator ceiling",
        "API at 200 req/s (uvicorn)",
        "API flat out (uvicorn)",
        "API at 200 req/s (granian)",
        "API flat out (granian)",
        "raw Redis GET",
    ):
        assert line in out
    assert "1 worker(s)" in out and "API flat out, granian / uvicorn:" in out
    assert "p99 at 200 req/s:" in out and "API flat out / raw GET:" in out
    assert "sample response: 10 hints from history, u2q, x2q" in out
    assert "deleted" in out


@pytest.mark.integration
def test_granian_serves_what_uvicorn_serves(redis_settings: RedisSettings) -> None:
    """AIGQ_SERVE_SERVER picks the HTTP server; the answers are the same, byte for byte in
    their hints (the u2q age moves with the clock)."""
    server = "granian"
    import asyncio

    from aigq.redis_clients import open_redis
    from cache.bench_data import BenchData, delete, load

    data = BenchData(f"test:servers:{uuid.uuid4().hex[:8]}:", users=50)

    async def fill() -> None:
        async with open_redis(redis_settings) as client:
            await load(client, data)

    async def clean() -> None:
        async with open_redis(redis_settings) as client:
            await delete(client, data.prefix)

    asyncio.run(fill())
    env = {"AIGQ_REDIS_URL": redis_settings.url, "AIGQ_REDIS_KEY_PREFIX": data.prefix}
    try:
        answers: dict[str, list[tuple[int, object]]] = {}
        for name in ("uvicorn", server):
            with serve_process(env | {"AIGQ_SERVE_SERVER": name}) as port:
                paths = [f"/v1/hints/{data.user(i)}?k=5" for i in range(0, 50, 7)]
                paths += ["/v1/hints/nobody?k=3", "/v1/hints/bad%20id", "/healthz"]
                answers[name] = []
                for path in paths:
                    status, body = get(port, path)
                    reply = orjson.loads(body)
                    answers[name].append((status, reply.get("hints", reply.get("status"))))
        assert answers[server] == answers["uvicorn"]
        assert any(hints for status, hints in answers["uvicorn"] if status == 200 and hints)
    finally:
        asyncio.run(clean())
