"""IL-SFT: the masking, the schedule, the batching, and short real runs of a very small model."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from aigq.registry import Registry
from generators.backends.hf import TransformersBackend
from generators.prompt import SPECIAL_TOKENS
from generators.settings import GeneratorSettings
from training import TrainingError
from training.sft import IGNORE, Pair, SFTConfig, batches, collate, encode, lm_loss, lr_at, train
from training.tiny import TinyConfig

SMALL = TinyConfig(vocab_size=400, hidden_size=32, layers=1, heads=1, kv_heads=1,
                   intermediate_size=64)  # fmt: skip

TOPICS = ["red shoes", "garden hose", "jazz records", "trail maps", "tea kettle", "chess set"]


def _pairs(n: int) -> list[Pair]:
    """Made-up pairs with something to learn: the target continues the searched topic."""
    out = []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        prompt = (
            f"Recommend 3 queries. Behaviors: {{<1><Today><search> {topic}"
            f"<2><1_day_ago><click> shop {i % 7}}} Output:"
        )
        out.append(Pair(prompt, f"{topic} sale\ncheap {topic}\n{topic} reviews"))
    return out


def _config(**kw: object) -> SFTConfig:
    base: dict[str, object] = {
        "tiny": SMALL, "batch_size": 8, "lr": 5e-3, "warmup_steps": 5, "eval_every": 10,
        "checkpoint_every": 10, "val_fraction": 0.1, "k": 3,
    }  # fmt: skip
    return SFTConfig(**(base | kw))  # type: ignore[arg-type]


def test_only_the_target_and_eos_are_learned(tmp_path: Path) -> None:
    bpe = replace(SMALL, tokenizer="bpe")  # sub-words: a prompt over the 16-token limit
    result = train(_pairs(40), _config(max_steps=2, tiny=bpe), Registry(tmp_path), {})
    tok = AutoTokenizer.from_pretrained(str(result.model.path))
    pair = _pairs(1)[0]
    ids, labels = encode(tok, pair, _config())
    prompt_len = len(tok(pair.prompt, add_special_tokens=False).input_ids)
    assert labels[:prompt_len] == [IGNORE] * prompt_len
    assert labels[prompt_len:] == ids[prompt_len:]
    assert labels[-1] == tok.eos_token_id
    # a prompt over the limit keeps its newest tokens, and the whole target
    short = _config(max_prompt_tokens=16)
    ids, labels = encode(tok, pair, short)
    assert sum(label == IGNORE for label in labels) == 16
    assert ids[:16] == tok(pair.prompt, add_special_tokens=False).input_ids[-16:]


def test_schedule_warms_up_then_decays_to_the_floor() -> None:
    config = _config(lr=1e-3, warmup_steps=10, min_lr_ratio=0.1, max_steps=100)
    rates = [lr_at(step, 100, config) for step in range(100)]
    assert rates[0] < rates[5] < rates[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in itertools.pairwise(rates[10:]))
    assert lr_at(100, 100, config) == pytest.approx(1e-4)


def test_batches_cover_every_sample_once_in_a_seeded_order() -> None:
    encoded = [([1] * (i % 13 + 1), [1]) for i in range(250)]
    first = batches(encoded, 8, seed=3)
    assert sorted(i for b in first for i in b) == list(range(250))
    assert first == batches(encoded, 8, seed=3)
    assert first != batches(encoded, 8, seed=4)


def test_a_short_run_learns_publishes_and_generates_valid_lists(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    result = train(_pairs(120), _config(max_steps=80), reg, {"source": "made up"})
    m = result.metrics
    assert m["train_loss"] < 3.0 < 5.0  # from ~ln(vocab) = 6 at the start
    assert m["val_loss"] < 4.0 and m["steps"] == 80 and m["tokens_per_s"] > 0
    manifest = reg.resolve("aigq-direct").manifest()
    assert manifest["parent"] == "tiny (new)" and manifest["data"] == {"source": "made up"}
    assert manifest["config"]["max_steps"] == 80 and manifest["metrics"]["params"] > 0
    assert not (result.model.path / "checkpoint").exists()

    tok = AutoTokenizer.from_pretrained(str(result.model.path))
    for token in SPECIAL_TOKENS:  # each special token is one id, never split
        assert len(tok(token, add_special_tokens=False).input_ids) == 1

    settings = GeneratorSettings(
        backend="transformers", model=str(result.model.path), temperature=0.0, k=3,
        max_tokens=24,
    )  # fmt: skip

    async def generate() -> list[list[str]]:
        async with TransformersBackend(settings) as backend:
            return await backend.generate([p.prompt for p in _pairs(6)])

    lists = asyncio.run(generate())
    assert len(lists) == 6
    assert sum(1 for queries in lists if queries) >= 4  # the validation kept real lists
    hits = sum(TOPICS[i] in " ".join(q) for i, q in enumerate(lists))
    assert hits >= 3, lists  # and they are about the searched topic


def test_an_interrupted_run_resumes_to_the_same_weights(tmp_path: Path) -> None:
    pairs = _pairs(60)
    # One saved base for both runs: a new tiny run trains its own tokenizer, and BPE training
    # may break ties between equally frequent merges differently from run to run.
    base = train(pairs, _config(max_steps=2), Registry(tmp_path / "base"), {})
    config = _config(base=str(base.model.path), max_steps=20, lr=1e-3)
    straight = train(pairs, config, Registry(tmp_path / "a"), {})

    reg = Registry(tmp_path / "b", shipped=None)  # no fallback to the repository's default

    def stop_at_15(step: int, total: int, stats: dict[str, float]) -> None:
        if step == 15:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(pairs, config, reg, {}, progress=stop_at_15)
    assert reg.latest("aigq-direct") is None  # nothing published
    unfinished = reg.unfinished("aigq-direct@v0001")
    resumed = train(pairs, config, reg, {}, resume=unfinished)
    assert resumed.model.version == "v0001" and resumed.metrics["steps"] == 20
    assert resumed.model.manifest()["parent"] == straight.model.manifest()["parent"]

    a = AutoModelForCausalLM.from_pretrained(str(straight.model.path))
    b = AutoModelForCausalLM.from_pretrained(str(resumed.model.path))
    for (name, wa), wb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.allclose(wa, wb, atol=1e-6), name


def test_lora_on_a_saved_model_merges_into_a_plain_folder(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    base = train(_pairs(40), _config(max_steps=3), reg, {})
    tuned = train(
        _pairs(40),
        _config(base=str(base.model.path), lora=True, lora_r=4, max_steps=3, name="tuned"),
        reg,
        {},
    )
    # a folder given by path: a version folder of a registry is named with its owner
    assert tuned.model.manifest()["parent"] == "aigq-direct/v0001@external"
    model = AutoModelForCausalLM.from_pretrained(str(tuned.model.path))  # no adapter files
    assert not any("lora" in name for name in model.state_dict())
    with pytest.raises(TrainingError, match="LoRA"):
        _config(lora=True)


def test_the_target_window_loss_equals_the_full_causal_lm_loss(tmp_path: Path) -> None:
    result = train(_pairs(40), _config(max_steps=5), Registry(tmp_path), {})
    tok = AutoTokenizer.from_pretrained(str(result.model.path))
    model = AutoModelForCausalLM.from_pretrained(str(result.model.path))
    encoded = [encode(tok, pair, _config()) for pair in _pairs(7)]
    batch = collate(encoded, range(7), tok.pad_token_id)
    loss, count = lm_loss(model, batch)
    assert count == sum(sum(label != IGNORE for label in e[1]) for e in encoded)
    # the reference: every row alone, unpadded, through the model's own shifted loss
    with torch.no_grad():
        total = 0.0
        for tokens, labels in encoded:
            ids = torch.tensor([tokens])
            out = model(input_ids=ids, labels=torch.tensor([labels]))
            total += out.loss.item() * sum(label != IGNORE for label in labels)
    assert loss.item() == pytest.approx(total / count, rel=1e-4)


def test_unknown_words_drop_their_line_and_an_emptied_think_pair() -> None:
    from training.sft import _known_lines
    from training.tiny import train_word_tokenizer

    tok = train_word_tokenizer(["the user wants red shoes", "red shoes sale", "jazz"], 50)
    target = (
        "the user wants red shoes\n<1><2>\nzyzzyva records\n<3>\nred shoes sale\n"
        "<h1>\n<4>\nqwxz\n<5>"
    )
    # <1><2> and <4> lost their one query (an unknown word), <5> never had one: all three go
    assert _known_lines(tok, target) == "the user wants red shoes\n<3>\nred shoes sale\n<h1>"
    assert _known_lines(tok, "red shoes sale\nqwxz") == "red shoes sale"  # a Direct target
