"""Settings of ``aigq x2q build`` (``AIGQ_X2Q_*``): the Think model, the window, the score."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from generators.backends import open_backend
from generators.backends.base import Backend
from generators.settings import BackendName, GeneratorSettings
from generators.x2q_build import BuildConfig


class X2QSettings(BaseSettings):
    """One object for the x2q build job (a daily CronJob in deploy/k8s)."""

    model_config = SettingsConfigDict(env_prefix="AIGQ_X2Q_", frozen=True, extra="forbid")

    backend: BackendName = Field(
        "transformers",
        description="transformers: the model in this process; vllm-http: an OpenAI-compatible "
        "server serving it (AIGQ_X2Q_BASE_URL)",
    )
    model: str = Field(
        "aigq-think",
        max_length=512,
        description="the Think model: a folder, a registry name[@version], or what the server "
        "serves (vllm-http)",
    )
    base_url: str = Field("http://127.0.0.1:8000", max_length=512, description="vllm-http root")
    api_key: SecretStr | None = Field(None, description="vllm-http: bearer token, if it wants one")
    days: int = Field(7, ge=1, le=90, description="window: triggers seen in the last N days")
    k: int = Field(10, ge=1, le=50, description="queries asked for per trigger")
    keep: int = Field(20, ge=1, le=50, description="queries stored per trigger")
    alpha: float = Field(0.7, ge=0.0, le=1.0, description="S = alpha*relevance + (1-alpha)*eff.")
    n: int = Field(1, ge=1, le=16, description="samples per trigger, merged in rank order")
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="0: greedy")
    retry_n: int = Field(
        4, ge=0, le=16, description="a trigger left without queries: answers sampled (0: none)"
    )
    retry_temperature: float = Field(0.8, gt=0.0, le=2.0, description="their temperature")
    max_tokens: int = Field(96, ge=8, le=1024, description="generated tokens per sample")
    batch_size: int = Field(32, ge=1, le=1024, description="triggers per model call")
    max_triggers: int = Field(0, ge=0, description="most seen triggers only (0: all)")
    popular: int = Field(100, ge=0, le=10_000, description="popular-set size (0: leave it)")
    ttl_s: int = Field(3 * 86_400, ge=60, description="an index version's keys expire after")
    grace_s: int = Field(600, ge=0, le=86_400, description="the old version lives on this long")
    timeout_s: float = Field(600.0, gt=0, description="one model call")

    def build_config(self, model_version: str) -> BuildConfig:
        return BuildConfig(
            k=self.k, keep=self.keep, alpha=self.alpha, batch_size=self.batch_size,
            popular=self.popular, popular_ttl_s=self.ttl_s, retry_n=self.retry_n,
            retry_temperature=self.retry_temperature, model_version=model_version,
        )  # fmt: skip

    def generator(self, model: str, model_version: str) -> GeneratorSettings:
        """The backend's settings: the Think format is not the list format, so no structured
        decoding; the rest as asked."""
        return GeneratorSettings(
            backend=self.backend, model=model, model_version=model_version,
            base_url=self.base_url, api_key=self.api_key, k=self.k, n=self.n,
            max_tokens=self.max_tokens, temperature=self.temperature, structured=False,
            batch_size=self.batch_size, timeout_s=self.timeout_s, reload=False,
        )  # fmt: skip

    @contextlib.asynccontextmanager
    async def open_backends(
        self, model: str, model_version: str
    ) -> AsyncIterator[tuple[Backend, Backend | None]]:
        """The build's backend and its retry backend (None without retries), both open."""
        async with contextlib.AsyncExitStack() as stack:
            backend = await stack.enter_async_context(
                open_backend(self.generator(model, model_version))
            )
            again = self.retry_generator(model, model_version)
            retry = await stack.enter_async_context(open_backend(again)) if again else None
            yield backend, retry

    def retry_generator(self, model: str, model_version: str) -> GeneratorSettings | None:
        """The second try's settings (``retry_n`` sampled answers), or None without one."""
        if not self.retry_n:
            return None
        first = self.generator(model, model_version)
        return first.model_copy(update={"n": self.retry_n, "temperature": self.retry_temperature})
