"""IL-GRPO's loop (training/grpo.py), rollouts (training/grpo_rollout.py) and data
(training/grpo_data.py).

The loop runs on the shipped model (models/aigq-direct, a 1.9M-parameter Qwen3) for two
steps: real rollouts, real rewards, real updates, a real registry folder; on Direct prompts
and on AIGQ-Think ones (the loop runs whatever the model writes, Think format or not).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch

from aigq.datasets.synthetic import SyntheticConfig, generate
from aigq.registry import SHIPPED, Registry
from generators.prompt import compressed_prompt
from training import TrainingError
from training.ctr_data import CtrExample, UserContext
from training.grpo import LOG_FILE, RUN_FILE, GRPOConfig, prompt_schedule, train
from training.grpo_data import GrpoPrompt, ctr_rows, grpo_prompt, slot_ctr, think_grpo_prompt
from training.grpo_math import token_slots
from training.grpo_rollout import completion_mask, left_pad
from training.samples import Context, Sample, think_samples

SHOWN = ("weather", "yahoo mail", "cheap flights")


def _prompt(user: str, references: tuple[str, ...] = ("weather", "paris hotels")) -> GrpoPrompt:
    text = compressed_prompt(
        [("t:travel", 1.0)], [(0, "search", "cheap flights", "")], now_ms=60_000, history=SHOWN
    )
    context = UserContext(user, 60_000, ("cheap flights",), "cheap flights", 3, SHOWN)
    searched = (("weather", 2, 1_000), ("yahoo mail", 1, 2_000), ("cheap flights", 1, None))
    return GrpoPrompt(text, SHOWN, references, context, searched)


def test_completion_mask_keeps_tokens_up_to_the_first_end() -> None:
    eos = 0
    completion = torch.tensor([[5, 6, 0, 0], [5, 0, 7, 0], [5, 6, 7, 8]])
    # row 0 ends at index 2 (kept), the padding after it is not; row 2 never ends
    expected = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]])
    assert torch.equal(completion_mask(completion, eos), expected)


def test_left_pad_right_aligns_rows() -> None:
    ids, mask = left_pad([[1, 2, 3], [4]], pad_id=0)
    assert ids.tolist() == [[1, 2, 3], [0, 0, 4]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_the_end_token_belongs_to_the_slot_it_leaves_empty() -> None:
    # "<h1>\n<h2>" then the end: two lines written, the end gives up slot 2
    assert token_slots(["<h1>", "\n", "<h2>", "<eos>"], ended=True) == [0, 0, 1, 2]
    # "<h1>\n" then the end: the newline already closed line 0, the end gives up slot 1
    assert token_slots(["<h1>", "\n", "<eos>"], ended=True) == [0, 0, 1]
    # nothing written: the end gives up slot 0
    assert token_slots(["<eos>"], ended=True) == [0]


def test_the_schedule_walks_every_prompt_once_per_pass() -> None:
    config = GRPOConfig(steps=5, prompts_per_step=4)
    steps = prompt_schedule(10, config)
    assert [len(s) for s in steps] == [4] * 5
    flat = [i for s in steps for i in s]
    assert sorted(flat[:10]) == list(range(10))  # the first pass: each prompt once
    assert prompt_schedule(10, config) == steps  # seeded


def test_ctr_rows_carry_each_slot_position_and_the_user_stats() -> None:
    prompt = _prompt("u1")
    rows = ctr_rows(prompt, ["weather", None, "paris hotels"])
    assert [(r.query, r.position, r.source) for r in rows] == [
        ("weather", 0, "u2q"),
        ("paris hotels", 2, "u2q"),
    ]
    assert (rows[0].times_searched, rows[0].last_searched_ms) == (2, 1_000)
    assert (rows[1].times_searched, rows[1].last_searched_ms) == (0, None)
    # no scorer: every slot 0; with one, a slot without a query stays 0
    assert slot_ctr([(prompt, ["weather", None])], None) == [[0.0, 0.0]]
    got = slot_ctr([(prompt, ["weather", None]), (prompt, [None, "x y"])], lambda r: [0.5] * len(r))
    assert got == [[0.5, 0.0], [0.0, 0.5]]


def test_a_sample_becomes_a_prompt_with_its_expanded_target() -> None:
    day = 1_148_000_000_000  # 2006-05-19
    context = Context(
        user_id="u1", cut_ms=day, recent=((day - 1_000, "search", "weather", ""),),
        profile=(), searches=("weather", "weather", "maps"), version=3, fingerprint="f",
        last_ts=day - 1_000, history=("weather", "maps"),
        searched=(("weather", 2, day - 1_000),),
    )  # fmt: skip
    sample = Sample("proxy", context, ("maps", "paris hotels"), "maps")
    prompt = grpo_prompt(sample)
    assert prompt.shown == ("weather", "maps")
    # history first in the prompt's order, then the new label
    assert prompt.references == ("weather", "maps", "paris hotels")
    assert prompt.user.last_search == "maps" and prompt.user.searches == 3
    stats = {key: (times, last) for key, times, last in prompt.searched}
    assert stats["weather"] == (2, day - 1_000) and stats["maps"] == (1, None)


@pytest.mark.filterwarnings("ignore::UserWarning")  # generate's notes on sampling settings
def test_two_steps_train_and_save_a_model_with_its_curve(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry", shipped=SHIPPED)
    config = GRPOConfig(
        base="aigq-direct", name="grpo-test", steps=2, prompts_per_step=2, group=3,
        max_new_tokens=12, threads=1, filter_low=0.0, filter_high=1.0,
    )  # fmt: skip
    prompts = [_prompt("u1"), _prompt("u2", ("yahoo mail",))]
    result = train(prompts, config, registry, {"source": "test"}, publish=False)
    assert not result.published
    assert registry.latest("grpo-test") is None  # a candidate: nothing loads it yet
    assert (result.model.path / "config.json").is_file()
    curve = json.loads((result.model.path / LOG_FILE).read_text())
    assert [row["step"] for row in curve] == [1.0, 2.0]
    assert all(math.isfinite(row["reward"]) and row["kept"] == 1.0 for row in curve)
    assert all("loss" in row and row["entropy"] > 0 for row in curve)
    assert result.manifest["kind"] == "il-grpo"
    assert result.manifest["parent"] == "aigq-direct@shipped"
    assert result.metrics["optimizer_steps"] == 2 * config.inner_steps
    # the manifest it would be published with lies beside the unpublished candidate
    run = json.loads((result.model.path / RUN_FILE).read_text())
    assert run["kind"] == "il-grpo" and run["config"]["steps"] == 2


def _think_prompts(n: int) -> list[GrpoPrompt]:
    """The first ``n`` Think prompts with a reference of a small synthetic log."""
    samples = think_samples(generate(SyntheticConfig(users=4, days=2, seed=5)))
    prompts = [p for p in map(think_grpo_prompt, samples) if p.references]
    assert len(prompts) >= n
    return prompts[:n]


@pytest.mark.filterwarnings("ignore::UserWarning")  # generate's notes on sampling settings
def test_two_think_steps_train_and_publish_with_the_trigger_reward(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry", shipped=SHIPPED)
    config = GRPOConfig(
        base="aigq-direct", name="grpo-think", steps=2, prompts_per_step=2, group=2,
        max_new_tokens=12, threads=1, filter_low=0.0, filter_high=1.0,
    )  # fmt: skip
    prompts = _think_prompts(2)
    assert all(p.is_think and p.behaviours > 0 for p in prompts)
    result = train(prompts, config, registry, {"sample_kind": "think"})
    assert result.published
    latest = registry.latest("grpo-think")
    assert latest is not None and latest.version == result.model.version
    curve = json.loads((result.model.path / LOG_FILE).read_text())
    assert [row["step"] for row in curve] == [1.0, 2.0]
    assert all(0.0 <= row["trigger_reward"] <= 1.0 for row in curve)
    assert all("loss" in row and math.isfinite(row["loss"]) for row in curve)
    assert latest.manifest()["data"]["sample_kind"] == "think"


def test_direct_and_think_prompts_are_not_trained_together(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry", shipped=SHIPPED)
    with pytest.raises(TrainingError, match="mix Direct and Think"):
        train([_prompt("u1"), *_think_prompts(1)], GRPOConfig(), registry, {})
    assert not (tmp_path / "registry").exists() or not any((tmp_path / "registry").iterdir())


def test_a_failed_run_leaves_no_version_behind(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry", shipped=SHIPPED)
    config = GRPOConfig(base="aigq-direct", name="grpo-fail", steps=1, prompts_per_step=1,
                        group=2, max_new_tokens=4, threads=1)  # fmt: skip

    def broken(rows: Sequence[CtrExample]) -> list[float]:
        raise TrainingError("the CTR model is gone")

    with pytest.raises(TrainingError, match="gone"):
        train([_prompt("u1")], config, registry, {}, ctr=broken)
    assert not any((tmp_path / "registry" / "grpo-fail").iterdir())


def test_curves_are_smoothed_over_a_trailing_window_and_plotted(tmp_path: Path) -> None:
    from training.grpo_plot import plot_curves, smooth

    # window 2: 1, (1 + 3) / 2, (3 + 5) / 2, (5 + 7) / 2
    assert smooth([1.0, 3.0, 5.0, 7.0], 2) == [1.0, 2.0, 4.0, 6.0]
    rows = [{"step": 1.0, "reward": 1.0, "score": 0.5, "kept": 1.0, "entropy": 1.2},
            {"step": 2.0, "reward": 2.0, "score": 0.6, "kept": 0.5}]  # fmt: skip
    out = tmp_path / "curves.png"
    plot_curves({"a": rows, "b": rows[:1]}, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.filterwarnings("ignore::UserWarning")  # generate's notes on sampling settings
def test_the_command_trains_on_a_log_and_a_missing_ctr_model_fails_cleanly(
    tmp_path: Path,
) -> None:
    from typer.testing import CliRunner

    from shell.cli import app

    registry = str(tmp_path / "reg")
    common = ["train", "grpo", "--source", "synthetic", "--cut", "2026-01-05",
              "--registry", registry, "--steps", "1"]  # fmt: skip
    missing = CliRunner().invoke(app, common)
    assert missing.exit_code == 1
    assert "no CTR model" in missing.output and "--ctr none" in missing.output
    result = CliRunner().invoke(app, [
        *common, "--ctr", "none", "--prompts-per-step", "2", "--group", "2",
        "--max-prompts", "8", "--name", "grpo-cli", "--threads", "1",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    latest = Registry(tmp_path / "reg").latest("grpo-cli")
    assert latest is not None and latest.manifest()["kind"] == "il-grpo"
    assert latest.manifest()["data"]["command"].startswith("aigq train grpo --source synthetic")


@pytest.mark.filterwarnings("ignore::UserWarning")  # generate's notes on sampling settings
def test_the_command_trains_think_on_the_think_samples(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from shell.cli import app

    registry = str(tmp_path / "reg")
    # --base: any model folder will do (models/aigq-think may not be trained yet)
    result = CliRunner().invoke(app, [
        "train", "grpo", "--source", "synthetic", "--cut", "2026-01-05", "--registry",
        registry, "--steps", "1", "--samples", "think", "--base", "aigq-direct", "--ctr",
        "none", "--prompts-per-step", "2", "--group", "2", "--max-prompts", "4",
        "--threads", "1",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "think prompts" in result.output and "trigger" in result.output
    latest = Registry(tmp_path / "reg").latest("aigq-think")  # the default name for think
    assert latest is not None
    data = latest.manifest()["data"]
    assert data["sample_kind"] == "think" and data["prompts"] == 4
    # every sample is a prompt (4 of them drawn) or counted as dropped
    assert data["samples"] >= data["prompts"] + data["dropped_no_reference"]
    assert "--samples think" in data["command"]


def test_the_held_out_score_splits_head_and_tail_slots() -> None:
    from training.grpo_rewards import Rollout
    from training.grpo_score import summarise

    config = GRPOConfig()  # k 10, query max 1 * 1 + 1 + 0.2 = 2.2
    # 7 head slots of 1.0 and 3 tail slots of 0.5: head 1.0, tail 0.5, total 7 + 1.5 + 0.5
    a = Rollout((1.0,) * 7 + (0.5,) * 3, 0.5, ("q",) * 10)
    # nothing valid: every slot 0, sequence 0
    b = Rollout((0.0,) * 10, 0.0, (None,) * 10)
    got = summarise([a, b], config)
    assert got["reward"] == pytest.approx((9.0 + 0.0) / 2)
    assert got["head_reward"] == pytest.approx(0.5) and got["tail_reward"] == pytest.approx(0.25)
    assert got["score"] == pytest.approx((8.5 / 22 + 0.0) / 2)  # 8.5 / (10 * 2.2)
    assert got["queries"] == 5.0 and got["sequence_reward"] == 0.25
