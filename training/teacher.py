"""A teacher LLM behind any OpenAI-compatible endpoint (vLLM, llama.cpp's server, a hosted API).

AIGQ-Think's targets open with a rationale that a teacher writes (paper, "IL-SFT");
:mod:`training.think` decides what to ask and what to keep, this module only asks. It speaks
both dialects a local server offers, chosen by :attr:`TeacherConfig.api`:

- ``chat``: ``POST /v1/chat/completions`` with one user message; the server applies the
  model's chat template (SmolLM2-Instruct has one);
- ``completions``: ``POST /v1/completions`` with the text as the prompt, for a model without a
  chat template (the project's tiny model, a base model).

Requests run concurrently, at most ``concurrency`` at a time, each with its own timeout. An
httpx error, an error status or an unreadable answer becomes a :class:`TeacherError` for that
text (``raise ... from exc``); :meth:`Teacher.ask_all` returns it in that text's place, so one
failure costs one sample and the caller counts it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import orjson
from pydantic import SecretStr

from training import TrainingError

if TYPE_CHECKING:  # httpx is imported when a teacher is asked: `aigq` itself never needs it
    import httpx

TeacherApi = Literal["chat", "completions"]
MAX_ANSWER_BYTES = 64 * 1024
"""A response body larger than this is refused: ``max_tokens`` makes a real one ~1 KB."""
MAX_ANSWER_CHARS = 2_000
"""What is kept of an answer's text (the rationale is one line of it)."""
MAX_PROMPT_CHARS = 8_000
"""A text longer than this is not sent (the Think prompts are ~2 KB at most)."""


class TeacherError(TrainingError):
    """The teacher did not answer one text: unreachable, timed out, refused, or unreadable."""


@dataclass(frozen=True)
class TeacherConfig:
    """Where the teacher is and how to ask it."""

    base_url: str
    """e.g. ``http://127.0.0.1:8000`` (no ``/v1``)"""
    model: str = "smollm2"
    """the served model name (vLLM's ``--served-model-name``)"""
    api: TeacherApi = "chat"
    api_key: SecretStr | None = None
    """sent as a bearer token when set"""
    concurrency: int = 4
    """requests in flight at once"""
    timeout_s: float = 120.0
    """per request (a CPU server answers a 48-token request in seconds)"""
    max_tokens: int = 48
    temperature: float = 0.0
    """0: the same sample gets the same rationale on a rerun (greedy)"""

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise TrainingError(f"teacher URL must be http(s)://..., got {self.base_url!r}")
        if self.api not in ("chat", "completions"):
            raise TrainingError(f"teacher api must be chat or completions, got {self.api!r}")
        if not 1 <= self.concurrency <= 256:
            raise TrainingError(f"teacher concurrency must be in 1..256, got {self.concurrency}")
        if not 1 <= self.max_tokens <= 1_024 or self.timeout_s <= 0 or self.temperature < 0:
            raise TrainingError("need max_tokens in 1..1024, timeout_s > 0, temperature >= 0")


class Teacher:
    """A client of one teacher endpoint (module doc)."""

    def __init__(
        self, config: TeacherConfig, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.config = config
        self._transport = transport

    @property
    def path(self) -> str:
        return "/v1/chat/completions" if self.config.api == "chat" else "/v1/completions"

    def payload(self, text: str) -> dict[str, Any]:
        """The request body that asks for ``text``'s answer."""
        c = self.config
        body: dict[str, Any] = {
            "model": c.model, "max_tokens": c.max_tokens, "temperature": c.temperature, "n": 1,
        }  # fmt: skip
        if c.api == "chat":
            body["messages"] = [{"role": "user", "content": text}]
        else:
            body["prompt"] = text
        return body

    async def ask_all(self, texts: Sequence[str]) -> list[str | TeacherError]:
        """Each text's answer, in order; a text that got none has its :class:`TeacherError`."""
        if not texts:
            return []
        c = self.config
        headers = {"content-type": "application/json"}
        if c.api_key is not None:
            headers["authorization"] = f"Bearer {c.api_key.get_secret_value()}"
        limit = asyncio.Semaphore(c.concurrency)
        import httpx

        async with httpx.AsyncClient(
            base_url=c.base_url.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(c.timeout_s, connect=min(10.0, c.timeout_s)),
            limits=httpx.Limits(max_connections=c.concurrency),
            transport=self._transport,
        ) as client:

            async def one(text: str) -> str | TeacherError:
                async with limit:
                    try:
                        return await self._ask(client, text)
                    except TeacherError as exc:
                        return exc

            return list(await asyncio.gather(*(one(text) for text in texts)))

    async def _ask(self, client: httpx.AsyncClient, text: str) -> str:
        import httpx

        url = self.config.base_url
        if len(text) > MAX_PROMPT_CHARS:
            raise TeacherError(f"a teacher prompt of {len(text)} chars (limit {MAX_PROMPT_CHARS})")
        try:
            response = await client.post(self.path, content=orjson.dumps(self.payload(text)))
        except httpx.HTTPError as exc:  # connect errors, timeouts, broken connections
            raise TeacherError(f"teacher at {url}: {exc!r}") from exc
        if response.status_code >= 400:
            raise TeacherError(
                f"teacher at {url} answered {response.status_code}: {response.text[:300]}"
            )
        if len(response.content) > MAX_ANSWER_BYTES:
            raise TeacherError(f"teacher at {url} answered {len(response.content)} bytes")
        return self.answer_text(response.content)

    def answer_text(self, body: bytes) -> str:
        """The text of a response body (the first choice's), at most ``MAX_ANSWER_CHARS``."""
        try:
            choice = orjson.loads(body)["choices"][0]
            text = choice["message"]["content"] if self.config.api == "chat" else choice["text"]
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError) as exc:
            raise TeacherError(f"teacher answered something unreadable: {exc!r}") from exc
        if not isinstance(text, str):  # a chat answer's content may be null (a tool call)
            raise TeacherError(f"teacher answered {type(text).__name__}, not text")
        return text[:MAX_ANSWER_CHARS]
