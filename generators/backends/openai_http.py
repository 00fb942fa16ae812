"""A vLLM server's OpenAI-compatible ``/v1/completions`` endpoint, over HTTP (httpx).

One request carries the whole micro-batch (``prompt`` is a list), ``n`` samples each, and the
list format as ``structured_outputs`` (vLLM's current field; the old ``guided_*`` fields are
ignored by recent servers without a word). ``model`` is the served model's name, or a LoRA
adapter's name when the server was started with ``--enable-lora --lora-modules name=path``:
that is how one server serves several fine-tuned versions.

The server answers ``choices`` with ``index = prompt_index * n + sample``; they are put back
in that order whatever order they arrive in.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx
import orjson

from generators.backends.base import Backend, BackendRejected, BackendUnavailable, output_regex
from generators.settings import GeneratorSettings


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

    def payload(self, prompts: Sequence[str]) -> dict[str, Any]:
        s = self.settings
        body: dict[str, Any] = {
            "model": s.model,
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
        try:
            response = await self._client.post(
                "/v1/completions", content=orjson.dumps(self.payload(prompts))
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

    async def healthy(self) -> bool:
        try:
            response = await self._client.get("/health", timeout=2.0)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def aclose(self) -> None:
        await self._client.aclose()
