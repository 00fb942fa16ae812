"""A vLLM server's OpenAI-compatible ``/v1/completions`` endpoint, over HTTP (httpx).

One request carries the whole micro-batch (``prompt`` is a list), ``n`` samples each, and the
list format as ``structured_outputs`` (vLLM's current field; the old ``guided_*`` fields are
ignored by recent servers without a word). ``model`` is the served model's name, or a LoRA
adapter's name when the server was started with ``--enable-lora --lora-modules name=path``:
that is how one server serves several fine-tuned versions.

The server answers ``choices`` with ``index = prompt_index * n + sample``; they are put back
in that order whatever order they arrive in.

**Hot reload** (:meth:`OpenAIHttpBackend.swap`): an adapter version is loaded into the running
server with vLLM's runtime LoRA API (``POST /v1/load_lora_adapter`` ``{"lora_name",
"lora_path", "load_inplace"}``; the server runs with ``--enable-lora`` and
``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``, and sees ``lora_path`` at the same path), and from
then on ``model`` names that adapter. Adapters are never unloaded here: another generator on
the same server may still be sending requests to the previous one. A whole model cannot be
swapped into a running server: that is a server restart (or a rolled Deployment).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import orjson

from generators.backends.base import (
    Backend,
    BackendRejected,
    BackendUnavailable,
    ReloadFailed,
    ReloadUnsupported,
    output_regex,
)
from generators.settings import GeneratorSettings


def adapter_name(version: str) -> str:
    """The name a version's adapter is served under (``aigq-direct@v0002`` ->
    ``aigq-direct-v0002``): what ``model`` says in each request from then on."""
    return re.sub(r"[^A-Za-z0-9._-]", "-", version)[:128]


class OpenAIHttpBackend(Backend):
    name = "vllm-http"

    def __init__(
        self, settings: GeneratorSettings, transport: httpx.AsyncBaseTransport | None = None
    ):
        super().__init__(settings)
        headers = {"content-type": "application/json"}
        if settings.api_key is not None:
            headers["authorization"] = f"Bearer {settings.api_key.get_secret_value()}"
        self._client = httpx.AsyncClient(
            base_url=settings.base_url.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(settings.timeout_s, connect=min(5.0, settings.timeout_s)),
            transport=transport,
        )
        self._model = settings.model  # the served model or adapter; swap() changes it

    def payload(self, prompts: Sequence[str], model: str | None = None) -> dict[str, Any]:
        s = self.settings
        body: dict[str, Any] = {
            "model": model or self._model,
            "prompt": list(prompts),
            "n": s.n,
            "max_tokens": s.max_tokens,
            "temperature": s.temperature,
            "top_p": s.top_p,
            "skip_special_tokens": False,  # copy tokens (<h2>): the parser expands them
        }
        if s.structured:
            body["structured_outputs"] = {"regex": output_regex(s.k, s.max_query_chars)}
        return body

    async def complete(self, prompts: Sequence[str]) -> list[list[str]]:
        return (await self.complete_versioned(prompts))[0]

    async def complete_versioned(self, prompts: Sequence[str]) -> tuple[list[list[str]], str]:
        model, version = self._model, self.model_version  # one request, one version
        return await self._post(prompts, model), version

    async def _post(self, prompts: Sequence[str], model: str) -> list[list[str]]:
        try:
            response = await self._client.post(
                "/v1/completions", content=orjson.dumps(self.payload(prompts, model))
            )
        except httpx.HTTPError as exc:  # connect errors, timeouts, broken connections
            raise BackendUnavailable(f"vLLM at {self.settings.base_url}: {exc!r}") from exc
        if response.status_code >= 500 or response.status_code in (408, 429):
            raise BackendUnavailable(
                f"vLLM at {self.settings.base_url} answered {response.status_code}: "
                f"{response.text[:300]}"
            )
        if response.status_code >= 400:
            raise BackendRejected(
                f"vLLM refused the batch ({response.status_code}): {response.text[:500]}"
            )
        try:
            choices = orjson.loads(response.content)["choices"]
            n = self.settings.n
            out: list[list[str]] = [["" for _ in range(n)] for _ in prompts]
            for choice in choices:
                index = int(choice["index"])
                out[index // n][index % n] = str(choice["text"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, IndexError) as exc:
            raise BackendUnavailable(f"vLLM answered something unreadable: {exc!r}") from exc
        return out

    async def swap(self, path: Path, version: str, adapter: bool = False) -> None:
        url = self.settings.base_url
        if not adapter:
            raise ReloadUnsupported(
                f"{version} is a whole model: a running vLLM server cannot swap it in; restart "
                f"the server at {url} on {path} (or roll its Deployment)"
            )
        name = adapter_name(version)
        body = {"lora_name": name, "lora_path": str(path), "load_inplace": True}
        try:
            response = await self._client.post("/v1/load_lora_adapter", content=orjson.dumps(body))
        except httpx.HTTPError as exc:
            raise ReloadFailed(f"vLLM at {url} did not load {version}: {exc!r}") from exc
        if response.status_code == 404 and b'"Not Found"' in response.content:
            raise ReloadUnsupported(
                f"vLLM at {url} has no runtime LoRA API: start it with --enable-lora and "
                "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True"
            )
        if response.status_code >= 300:
            raise ReloadFailed(
                f"vLLM at {url} refused {version} ({response.status_code}): {response.text[:300]}"
            )
        self._model, self.model_version = name, version  # together: the next request on

    async def healthy(self) -> bool:
        try:
            response = await self._client.get("/health", timeout=2.0)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def aclose(self) -> None:
        await self._client.aclose()
