"""The backends for real: a vLLM server on the CPU (tiny model, random weights), transformers."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import pytest

from aigq.dev.probe import free_port
from aigq.events import RegenerationRequest
from generators.backends import BackendUnavailable, open_backend
from generators.backends.base import Backend, interleave, output_regex
from generators.backends.openai_http import OpenAIHttpBackend
from generators.prompt import compressed_prompt
from generators.requests import prompt_for
from generators.settings import GeneratorSettings

DAY = 86_400_000
T0 = 1_767_225_600_000


def _request(user: str, version: int) -> RegenerationRequest:
    return RegenerationRequest(
        user_id=user,
        version=version,
        reason="novel_search",
        shift=0.5,
        event_ts=T0,
        created_ts=T0,
        fingerprint="f",
        recent=(
            (T0 - DAY, "search", "trail running shoes", ""),
            (T0, "click", "Hoka Speedgoat 5", "Sports>Running"),
        ),
        profile=(("t:running", 0.6), ("c:sports>running", 0.4)),
    )


def _valid(query: str) -> bool:
    return (
        0 < len(query) <= 64
        and "<" not in query
        and ">" not in query
        and not any(unicodedata.category(c).startswith("C") for c in query)
    )


def test_payload_names_the_model_or_adapter_and_the_list_format() -> None:
    settings = GeneratorSettings(model="my-lora-adapter", n=3, k=5)
    body = OpenAIHttpBackend(settings).payload(["p1", "p2"])
    assert body["model"] == "my-lora-adapter" and body["n"] == 3 and body["prompt"] == ["p1", "p2"]
    assert body["structured_outputs"] == {"regex": output_regex(5, 64)}
    assert "guided_regex" not in body
    assert "structured_outputs" not in OpenAIHttpBackend(
        GeneratorSettings(structured=False)
    ).payload(["p"])


class _Fixed(Backend):
    """A backend whose completions are given: what the base does with them is under test."""

    def __init__(self, settings: GeneratorSettings, texts: list[list[str]]) -> None:
        super().__init__(settings)
        self.texts = texts

    async def complete(self, prompts: Sequence[str]) -> list[list[str]]:
        return self.texts[: len(prompts)]


@pytest.mark.asyncio
async def test_copy_tokens_become_the_history_queries_of_their_own_prompt() -> None:
    """The model copies a history query by its token; each list expands its own prompt's."""
    ask = compressed_prompt
    prompts = [
        ask([], [(T0, "search", "maps", "")], T0, history=["Weather", "bank of america"]),
        ask([], [(T0, "search", "maps", "")], T0, history=["ebay"]),
        ask([], [(T0, "search", "maps", "")], T0),  # no history: a copy token is garbage
    ]
    texts = [["<h2>\nnew query\n<h1><|endoftext|>"], ["<h1>\n<h2>"], ["<h1>"]]
    backend = _Fixed(GeneratorSettings(k=5), texts)
    lists = await backend.generate(prompts)
    assert lists == [["bank of america", "new query", "weather"], ["ebay"], []]
    assert backend.stats.dropped_invalid == 2 and backend.stats.malformed_lists == 1
    # several samples per prompt: each is expanded before they are merged by rank
    backend = _Fixed(GeneratorSettings(k=5, n=2), [["<h1>\nx y", "<h2>\n<h1>"]])
    assert await backend.generate(prompts[:1]) == [["weather", "bank of america", "x y"]]


def test_the_list_format_and_decoding_keep_copy_tokens() -> None:
    regex = re.compile(output_regex(10, 64))
    assert regex.fullmatch("<h2>\nfoo bar\n<h10>\n") and not regex.fullmatch("<h11>\n")
    assert not regex.fullmatch("<search>\n") and not regex.fullmatch("a <b> c\n")
    body = OpenAIHttpBackend(GeneratorSettings()).payload(["p"])
    assert body["skip_special_tokens"] is False  # else the server would strip them


def test_interleave_merges_samples_by_rank() -> None:
    assert interleave([["a", "b", "c"], ["x"], ["p", "q"]]) == ["a", "x", "p", "b", "q", "c"]
    assert interleave([]) == []


@pytest.mark.integration
@pytest.mark.asyncio
async def test_vllm_server_backend_generates_valid_lists(vllm_server: str) -> None:
    settings = GeneratorSettings(base_url=vllm_server, n=2, k=5, max_tokens=48, temperature=1.0)
    prompts = [prompt_for(_request(f"u{i}", i + 1), k=5) for i in range(3)]
    async with open_backend(settings) as backend:
        assert await backend.healthy()
        lists = await backend.generate(prompts)
    assert len(lists) == 3
    assert all(len(queries) <= 5 for queries in lists)
    assert all(_valid(q) for queries in lists for q in queries)
    assert all(len(set(queries)) == len(queries) for queries in lists)
    assert backend.stats.lists == 3
    assert backend.stats.lists == backend.stats.malformed_lists + sum(1 for q in lists if q)
    assert sum(len(q) for q in lists) > 0  # the format holds even with random weights


@pytest.mark.integration
@pytest.mark.asyncio
async def test_unreachable_server_is_unavailable_not_a_crash() -> None:
    settings = GeneratorSettings(base_url=f"http://127.0.0.1:{free_port()}", timeout_s=2)
    async with open_backend(settings) as backend:
        assert not await backend.healthy()
        with pytest.raises(BackendUnavailable):
            await backend.generate(["prompt"])


@pytest.mark.asyncio
async def test_transformers_backend_on_the_tiny_model(tiny_model: Path) -> None:
    settings = GeneratorSettings(
        backend="transformers", model=str(tiny_model), max_tokens=24, temperature=0.0, k=4
    )
    prompts = [prompt_for(_request("a", 1), k=4), prompt_for(_request("b", 2), k=4)]
    async with open_backend(settings) as backend:
        lists = await backend.generate(prompts)
    assert len(lists) == 2
    assert all(len(q) <= 4 and all(_valid(x) for x in q) for q in lists)
    assert backend.stats.lists == 2 and backend.model_seconds > 0
