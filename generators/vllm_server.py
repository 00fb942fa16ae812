"""Start a vLLM OpenAI-compatible server on the CPU from its own environment (``.venv-vllm``).

vLLM cannot share this project's environment (see :mod:`generators.backends.vllm_engine`), so
the benchmark, the tests and a local run start it as a subprocess from the interpreter that
``AIGQ_VLLM=cpu scripts/bootstrap.sh`` made, and reach it over HTTP.
"""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request
from pathlib import Path

from aigq.dev.probe import free_port, wait_until
from aigq.errors import ServiceError

SERVED_NAME = "aigq-direct"


def vllm_python() -> Path | None:
    """The vLLM environment's interpreter: ``AIGQ_VLLM_PYTHON``, else ``.venv-vllm`` beside
    this checkout; None when there is none."""
    configured = os.environ.get("AIGQ_VLLM_PYTHON")
    repo = Path(__file__).resolve().parents[1]
    path = Path(configured) if configured else repo / ".venv-vllm" / "bin" / "python"
    return path if path.exists() else None


def start_vllm_server(
    model: Path,
    log: Path,
    max_model_len: int = 2_048,
    timeout_s: float = 300,
    cpus: set[int] | None = None,
    served_name: str = SERVED_NAME,
) -> tuple[subprocess.Popen[bytes], str, float]:
    """Serve ``model`` as ``served_name`` (``aigq-direct``) on a free loopback port: the
    process, its URL and how long it took to answer ``/health``. Raises ServiceError when it
    cannot start.

    ``cpus`` pins the server (and the engine processes it starts) to those cores, so that on a
    small machine the rest of the loop keeps a core of its own."""
    python = vllm_python()
    if python is None:
        raise ServiceError("no vLLM environment: run AIGQ_VLLM=cpu scripts/bootstrap.sh")
    port = free_port()
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_LOGGING_LEVEL": "WARNING"}
    if cpus:  # its OpenMP threads too, else it binds them to every core
        env["VLLM_CPU_OMP_THREADS_BIND"] = f"{min(cpus)}-{max(cpus)}"
    argv = [
        str(python), "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model), "--served-model-name", served_name,
        "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32",
        "--max-model-len", str(max_model_len), "--seed", "0",
    ]  # fmt: skip
    started = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv,
            env=env,
            stdout=out,
            stderr=out,
            cwd=model,
            preexec_fn=None if cpus is None else lambda: os.sched_setaffinity(0, cpus),
        )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            return True
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    wait_until(up, timeout_s=timeout_s, every_s=0.5)
    if proc.poll() is not None or not up():
        stop_vllm_server(proc)
        raise ServiceError(f"vLLM did not start:\n{log.read_text()[-3000:]}")
    return proc, url, time.monotonic() - started


def stop_vllm_server(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
