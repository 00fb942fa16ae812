"""Settings of the generator worker (``AIGQ_GENERATE_*``): backend, batching, retries, cache."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Literal, Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from aigq.retry import ExponentialBackoff, Retry

BackendName = Literal["vllm-http", "vllm", "transformers"]


class GeneratorSettings(BaseSettings):
    """One object for ``aigq generate``; the backends and the worker take what they need."""

    model_config = SettingsConfigDict(env_prefix="AIGQ_GENERATE_", frozen=True, extra="forbid")

    backend: BackendName = Field(
        "vllm-http",
        description="vllm-http: an OpenAI-compatible vLLM server; vllm: the engine in this "
        "process; transformers: plain PyTorch (the CPU fallback)",
    )
    model: str = Field(
        "aigq-direct",
        description="vllm-http: the served model name, or a LoRA adapter's name; otherwise a "
        "Hugging Face model folder",
    )
    model_version: str | None = Field(None, description="recorded with each run (default: model)")
    base_url: str = Field("http://127.0.0.1:8000", description="vllm-http: the server's root")
    api_key: SecretStr | None = Field(None, description="vllm-http: bearer token, if it wants one")
    k: int = Field(10, ge=1, le=50, description="queries asked for per user")
    n: int = Field(1, ge=1, le=16, description="samples per request, merged in rank order")
    max_tokens: int = Field(160, ge=8, le=4096, description="generated tokens per sample")
    temperature: float = Field(0.7, ge=0.0, le=2.0, description="sampling temperature")
    top_p: float = Field(0.95, gt=0.0, le=1.0, description="nucleus sampling mass")
    structured: bool = Field(True, description="constrain decoding to the list format")
    compressed: bool = Field(True, description="the special-token prompt (off: verbose)")
    max_query_chars: int = Field(
        64, ge=8, le=256, description="longer generated queries are dropped"
    )

    batch_size: int = Field(16, ge=1, le=1024, description="requests per micro-batch")
    batch_wait_ms: int = Field(50, ge=0, le=10_000, description="wait this long to fill one")
    max_in_flight: int = Field(2, ge=1, le=64, description="micro-batches generating at once")
    order: Literal["priority", "fifo"] = Field(
        "priority",
        description="priority: pending requests served by interest shift plus waiting time "
        "(generators.pending); fifo: in arrival order (the benchmark's baseline)",
    )
    aging_s: float = Field(
        5.0, gt=0, le=3600, description="priority: a request gains one point per this wait"
    )
    max_pending: int = Field(
        4096, ge=1, le=1_000_000, description="requests read ahead and kept (one per user)"
    )
    max_pending_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="their record bytes at most"
    )
    initial_capacity: float = Field(
        10.0, gt=0, le=100_000, description="lists/s published before any batch is measured"
    )
    revoke_wait_s: float = Field(
        10.0, ge=0, le=300, description="a rebalance waits this long for batches in flight"
    )
    timeout_s: float = Field(60.0, gt=0, description="one backend call")
    retries: int = Field(2, ge=0, le=20, description="retries of a failed call before pausing")
    backoff_s: float = Field(0.5, gt=0, description="first retry delay (doubles, jittered)")
    backoff_max_s: float = Field(30.0, gt=0, description="longest wait between tries")

    group_id: str = Field("aigq-generate", description="consumer group")
    keep_runs: int = Field(3, ge=1, le=100, description="M: runs kept per user")
    ttl_s: int = Field(7 * 86_400, ge=1, description="a user's runs expire after this")
    log_prompts: bool = Field(False, description="copy each prompt into the results topic")
    metrics_port: int = Field(0, ge=0, le=65535, description="Prometheus /metrics (0: off)")
    metrics_bind: str = Field("127.0.0.1", description="address of the metrics endpoint")
    device: str = Field("cpu", description="transformers: torch device")
    model_path: Path | None = Field(None, description="tokenizer folder (default: model)")
    reload: bool = Field(
        True,
        description="hot reload: apply the model versions announced on <prefix>.models "
        "(generators.reload) without a restart",
    )
    reload_name: str = Field(
        "aigq-direct",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
        description="the registry name whose announced versions this generator serves",
    )

    @model_validator(mode="after")
    def _backoff(self) -> Self:
        if self.backoff_max_s < self.backoff_s:
            raise ValueError("backoff_max_s must be >= backoff_s")
        return self

    @property
    def version(self) -> str:
        return self.model_version or self.model

    def retry(
        self,
        retry_on: tuple[type[BaseException], ...],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> Retry:
        """``sleep`` waits between tries (the worker's ends early when it is stopped)."""
        backoff = ExponentialBackoff(self.backoff_s, self.backoff_max_s)
        return Retry(backoff, self.retries, retry_on, sleep=sleep)
