"""Plain GRPO (TRL's GRPOTrainer, one summed reward): the reward function on hand-computed
completions (copy tokens kept, one CTR call per batch), the left cut of long prompts, and a
two-step run of the shipped model into a registry folder."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from aigq.registry import Registry
from training.ctr_data import CtrExample, UserContext
from training.grpo import GRPOConfig
from training.grpo_data import GrpoPrompt
from training.grpo_plain import KIND, SummedReward, prompt_texts, train_plain
from training.grpo_rewards import RewardConfig, score_rollout, slot_queries
from training.grpo_rollout import encode_prompts

MODEL = Path(__file__).resolve().parents[2] / "models" / "aigq-direct"
SHOWN = ("paris hotels", "yahoo mail")  # the prompt's history queries: <h1>, <h2>
PROMPT = (
    "Recommend 10 queries. Behaviors: {<1><Today><search> paris hotels<2><Today><click> "
    "expedia<3><Today><search> yahoo mail} Searched: {<h1>paris hotels<h2>yahoo mail} Output:"
)


def _prompt(references: Sequence[str], user: str = "u1") -> GrpoPrompt:
    return GrpoPrompt(PROMPT, SHOWN, tuple(references), UserContext(user, 0, (), "", 0, ()), ())


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(MODEL))


def test_reward_is_the_summed_rollout_reward_with_copy_tokens(tokenizer: Any) -> None:
    rc = RewardConfig(k=3, gamma=2.0)
    prompts = [
        _prompt(["cheap flights paris", "paris hotels", "car rental"]),
        _prompt(["yahoo mail"], user="u2"),
    ]
    calls: list[int] = []

    def scorer(rows: Sequence[CtrExample]) -> list[float]:  # p_ctr 0.1 for every query
        calls.append(len(rows))
        return [0.1] * len(rows)

    reward = SummedReward(prompts, GRPOConfig(rewards=rc), tokenizer, scorer)
    eos = tokenizer.eos_token_id
    texts = ["cheap flights\n<h1>", "<h2>"]
    # TRL's completion ids end with the end-of-sequence token; right padding (the pad is also
    # the end-of-sequence id) stands for what follows it
    ids = [[*tokenizer(t, add_special_tokens=False).input_ids, eos, eos] for t in texts]
    got = reward(prompts=[PROMPT] * 2, completions=["", ""], completion_ids=ids, index=[0, 1])
    # completion 0, prompt 0: slots "cheap flights", "paris hotels" (<h1>), none
    #   slot 0: CTR 2 * 0.1 = 0.2 + ROUGE-L vs "cheap flights paris" (P 2/2, R 2/3: F1 0.8)
    #           + length 0.2 * 1 = 1.2
    #   slot 1: 0.2 + ROUGE 1 (the same query) + 0.2 = 1.4; slot 2: no query, 0
    #   sequence: format 2 good of 2 lines = 1, repetition 0: 1; total 1.2 + 1.4 + 0 + 1 = 3.6
    # completion 1, prompt 1: "yahoo mail" (<h2>): 0.2 + 1 + 0.2 = 1.4; sequence 1; total 2.4
    assert got == pytest.approx([3.6, 2.4])
    assert calls == [3]  # one CTR call for the batch: 2 + 1 slots hold a query
    for text, prompt, value in zip(texts, prompts, got, strict=True):
        queries, verdicts = slot_queries(text, SHOWN, rc)
        p_ctr = [0.0 if q is None else 0.1 for q in queries]
        assert value == score_rollout(queries, verdicts, prompt.references, p_ctr, rc).total
    assert reward.figures is not None
    # the curve's figures: mean total (3.6 + 2.4) / 2 = 3; mean slot reward over its maximum
    # 2.2: ((1.2 + 1.4) / 3 + 1.4 / 3) / 2 / 2.2 = (4 / 3) / 2 / 2.2 = 0.30303;
    # mean query reward ((1.2 + 1.4) / 3 + 1.4 / 3) / 2 = 2 / 3; mean sequence reward 1
    assert reward.figures["reward"] == pytest.approx(3.0)
    assert reward.figures["score"] == pytest.approx(2 / 3 / 2.2)
    assert reward.figures["query_reward"] == pytest.approx(2 / 3)
    assert reward.figures["sequence_reward"] == pytest.approx(1.0)
    assert reward.figures["kept"] == 1.0
    assert reward.seen == [(0, 1)]


def test_prompts_keep_their_newest_tokens(tokenizer: Any) -> None:
    # 7 tokens: Searched: { <h1> paris hotels } Output:
    short = "Searched: {<h1>paris hotels} Output:"
    texts = prompt_texts(tokenizer, [PROMPT, short], max_tokens=8)
    assert texts[1] == short  # not cut: passed as it is
    # PROMPT ends "Searched: {<h1>paris hotels<h2>yahoo mail} Output:", 10 tokens; the last 8
    # start at <h1>. TRL tokenizes the cut text with the tokenizer's special tokens (it adds
    # none) and gets exactly those 8 back
    kept = encode_prompts(tokenizer, [PROMPT], 8)[0]
    assert tokenizer(texts[0]).input_ids == kept
    space = "\u0120"  # the byte-level tokenizer's mark of a space before a word
    assert tokenizer.convert_ids_to_tokens(kept) == [
        "<h1>", f"{space}paris", f"{space}hotels", "<h2>", f"{space}yahoo", f"{space}mail", "}",
        f"{space}Output:",
    ]  # fmt: skip


def test_two_steps_of_plain_grpo_into_the_registry(tmp_path: Path) -> None:
    prompts = [
        _prompt(["paris hotels", "cheap flights"]),
        _prompt(["yahoo mail", "weather"], user="u2"),
        _prompt(["car rental"], user="u3"),
    ]
    config = GRPOConfig(
        base=str(MODEL), name="plain", steps=2, prompts_per_step=2, group=2,
        max_new_tokens=16, inner_steps=1,
    )  # fmt: skip
    seen: list[tuple[int, int]] = []
    result = train_plain(prompts, config, Registry(tmp_path), {"source": "test"},
                         progress=lambda step, total, row: seen.append((step, total)))  # fmt: skip
    folder = result.model.path
    assert (folder / "config.json").is_file()
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["kind"] == KIND == "grpo-plain"
    assert result.published
    assert seen == [(1, 2), (2, 2)]
    assert [row["step"] for row in result.curve] == [1.0, 2.0]
    for row in result.curve:
        assert math.isfinite(row["reward"]) and math.isfinite(row["loss"])
        assert row["kept"] == 1.0
    assert json.loads((folder / "grpo_log.json").read_text()) == result.curve
    # (train_plain checks that step s trained on IL-GRPO's prompts of step s, or raises)
    assert result.metrics["optimizer_steps"] == 2.0  # 2 steps x 1 inner step
    # the saved config is the base's (the trainer's token alignment and cache switch undone)
    saved, base = (json.loads((p / "config.json").read_text()) for p in (folder, MODEL))
    assert {k: saved[k] for k in ("bos_token_id", "use_cache")} == {
        k: base[k] for k in ("bos_token_id", "use_cache")
    }
