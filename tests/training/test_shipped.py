"""The trained default the repository carries (``models/aigq-direct``): small, remade by the one
command its manifest records, and loaded unchanged by both generation backends."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aigq.events import RegenerationRequest
from aigq.registry import SHIPPED, Registry
from generators.backends import open_backend
from generators.requests import prompt_for
from generators.settings import GeneratorSettings
from generators.vllm_server import start_vllm_server, stop_vllm_server, vllm_python
from shell.cli import app
from training.split import DEFAULT_SALT, is_heldout

T0 = 1_147_000_000_000  # 2006-05-07, before the default cut
DAY = 86_400_000
ARCHITECTURE = (
    "model_type", "hidden_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "intermediate_size", "tie_word_embeddings",
)  # fmt: skip


def _manifest() -> dict[str, object]:
    data: dict[str, object] = json.loads((SHIPPED / "manifest.json").read_text())
    return data


def _command() -> list[str]:
    data = _manifest()["data"]
    assert isinstance(data, dict)
    return shlex.split(str(data["command"]))


def test_the_shipped_default_is_small_and_records_the_command_that_made_it() -> None:
    size = sum(p.stat().st_size for p in SHIPPED.rglob("*") if p.is_file())
    assert 0 < size <= 25 * 2**20
    assert _command()[:3] == ["aigq", "train", "sft"]
    manifest = _manifest()
    assert manifest["name"] == "aigq-direct"
    assert isinstance(manifest["metrics"], dict) and manifest["metrics"]["params"] > 0
    assert Registry(Path("/nonexistent-registry")).resolve("aigq-direct").path == SHIPPED


def _options(args: list[str]) -> dict[str, str]:
    """``--option value`` pairs (every option of the default's command takes a value)."""
    assert len(args) % 2 == 0, args
    return dict(zip(args[::2], args[1::2], strict=True))


def _write_user(folder: Path, user: str, searches: list[tuple[str, str]]) -> None:
    blocks = [f"{q}\t{stamp}\nhttp://www.{q.split()[0]}.com/\n" for q, stamp in searches]
    (folder / f"{user}.txt").write_text("\n".join(blocks))


def test_its_command_runs_for_a_few_steps_and_makes_the_same_model(tmp_path: Path) -> None:
    logs = tmp_path / "data" / "aol" / "user_search_logs"
    logs.mkdir(parents=True)
    users = [u for u in (str(5000 + i) for i in range(200)) if not is_heldout(u, 0.1, DEFAULT_SALT)]
    topics = ["weather", "bank of america", "cheap flights", "pizza recipe", "ebay motors"]
    for n, user in enumerate(users[:12]):
        searches = [
            (topics[(n + d) % len(topics)], f"2006-04-{d + 1:02d} 10:{m:02d}:00")
            for d in range(6)
            for m in range(2)
        ]
        _write_user(logs, user, searches)
    registry = tmp_path / "registry"
    extra = ["--data-dir", str(tmp_path / "data"), "--max-steps", "3"]
    argv = [*_command()[1:], *extra, "--registry", str(registry)]
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 0, result.output
    made = Registry(registry).resolve("aigq-direct")
    assert made.version == "v0001"
    new = json.loads((made.path / "config.json").read_text())
    shipped = json.loads((SHIPPED / "config.json").read_text())
    assert {k: new.get(k) for k in ARCHITECTURE} == {k: shipped.get(k) for k in ARCHITECTURE}
    recorded = shlex.split(made.manifest()["data"]["command"])
    assert recorded[:3] == ["aigq", "train", "sft"]
    assert _options(recorded[3:]) == _options([*_command()[3:], *extra])


def _request(user: str, history: tuple[str, ...]) -> RegenerationRequest:
    return RegenerationRequest(
        user_id=user, version=1, reason="novel_search", shift=0.5, event_ts=T0, created_ts=T0,
        fingerprint="f", recent=((T0 - DAY, "search", history[0], ""),),
        profile=(("t:" + history[0], 1.0),), history=history,
    )  # fmt: skip


PROMPTS = [
    prompt_for(_request("a", ("bank of america", "weather", "ebay")), k=10),
    prompt_for(_request("b", ("google", "myspace", "american idol", "home depot")), k=10),
]


def _whole_words(lists: list[list[str]]) -> None:
    """Valid lists, and every word in them a word of the model's vocabulary (no ``<unk>``)."""
    from transformers import AutoTokenizer

    assert len(lists) == len(PROMPTS) and any(lists)
    tokenizer = AutoTokenizer.from_pretrained(str(SHIPPED))
    assert len(tokenizer) > 1_000
    for queries in lists:
        assert len(queries) == len(set(queries)) <= 10
        for query in queries:
            assert 0 < len(query) <= 64
            ids = tokenizer(" " + query, add_special_tokens=False)["input_ids"]
            assert tokenizer.unk_token_id not in ids, query


@pytest.mark.asyncio
async def test_the_transformers_backend_loads_it_unchanged() -> None:
    settings = GeneratorSettings(
        backend="transformers", model=str(SHIPPED), max_tokens=96, temperature=0.0, k=10
    )
    async with open_backend(settings) as backend:
        _whole_words(await backend.generate(PROMPTS))


@pytest.mark.integration
@pytest.mark.asyncio
async def test_vllm_on_the_cpu_serves_it_unchanged(tmp_path: Path) -> None:
    if vllm_python() is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have .venv-vllm (scripts/bootstrap.sh makes it)")
        pytest.skip("no vLLM environment: run AIGQ_VLLM=cpu scripts/bootstrap.sh")
    proc, url, _ = start_vllm_server(SHIPPED, tmp_path / "server.log", max_model_len=1_024)
    try:
        settings = GeneratorSettings(base_url=url, k=10, max_tokens=96, temperature=0.0)
        async with open_backend(settings) as backend:
            assert await backend.healthy()
            _whole_words(await backend.generate(PROMPTS))
    finally:
        stop_vllm_server(proc)
