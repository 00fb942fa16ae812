"""Plain GRPO (the baseline of issue 21): TRL's ``GRPOTrainer`` with one summed reward.

IL-GRPO (:mod:`training.grpo`) gives each query slot its own group-normalised advantage. To
show what that buys, this module runs the textbook alternative on the same model, prompts,
steps and reward: every token of a rollout gets one number, the group-normalised
:attr:`~training.grpo_rewards.Rollout.total` (the slot rewards summed, plus the sequence
reward). It is TRL's trainer rather than a flag in ours, so the baseline is an implementation
others use, not one written to lose.

The mapping of :class:`~training.grpo.GRPOConfig` onto ``trl.GRPOConfig`` (checked against
TRL 1.16's source):

- one generation batch per step: ``prompts_per_step`` prompts x ``group`` completions
  (``num_generations``), the whole batch one optimizer batch (no accumulation, one step per
  generation), reused for ``inner_steps`` optimizer steps (``num_iterations``): ``steps x
  inner_steps`` optimizer steps in all;
- the prompts of step ``s`` are IL-GRPO's (:func:`~training.grpo.prompt_schedule`,
  flattened into the dataset, TRL's shuffling off), cut on the left to
  ``max_prompt_tokens`` tokens (TRL does not truncate: the kept tokens are decoded back to
  text, which this word-level tokenizer re-encodes to the same ids);
- sampling: ``temperature``, ``top_k``, top-p 1, ``max_new_tokens``; AdamW (0.9, 0.99), no
  weight decay, constant ``lr``, no warm-up, gradient norm clipped to ``grad_clip``; no KL
  (``beta=0``), as IL-GRPO; float32 on the CPU;
- the loss is TRL's ``"dapo"``: the clipped surrogate summed over the batch's completion
  tokens over their count, IL-GRPO's token mean;
- the entropy bonus is TRL's ``entropy_coef``, set before each optimizer step to IL-GRPO's
  linearly decaying weight (:func:`~training.grpo_math.entropy_weight`).

What remains different, besides the advantage itself: TRL clips the ratio to
``[1 - eps_low, 1 + eps_high]`` for every token (DAPO's clip-higher, the nearest it has to
IL-GRPO's entropy-adaptive clip, where the high-entropy tokens get ``+-eps_high`` and the rest
``+-eps_low``); it normalises with the sample standard deviation (divides by ``G - 1``; ours by
``G``) and does not clip advantages to ``+-adv_clip``; and it has no difficulty filter (every
prompt is trained on: the curve's ``kept`` is 1). The reward clip never binds in IL-GRPO (what
it clips is at most 2.2: one slot's reward, or the sequence reward), so its absence here
changes nothing.

Cost: on a machine without Triton (this CPU), TRL's chunked LM head projects every position of
prompt and completion onto the vocabulary, forward and backward, where IL-GRPO projects the
completion's alone: a step takes about twice IL-GRPO's on the same settings. The trainer also
rewrites the model's special-token ids and ``use_cache``; they are put back before saving, so
the folder's config is the base model's.

TRL is imported inside :func:`train_plain` only: it is heavy, and only this baseline needs it.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import torch

from aigq.registry import Registry
from training import TrainingError
from training.grpo import (
    GRPOConfig,
    GRPOResult,
    Progress,
    load_policy,
    prompt_schedule,
    save_run,
    score_texts,
    step_figures,
)
from training.grpo_data import CtrScorer, GrpoPrompt
from training.grpo_math import entropy_weight
from training.grpo_rewards import Rollout

KIND = "grpo-plain"


class SummedReward:
    """TRL's reward function: each completion's :attr:`Rollout.total`, scored as IL-GRPO
    scores it (:func:`training.grpo.score_texts`: one CTR call per batch).

    TRL hands reward functions completions decoded with ``skip_special_tokens=True``, which
    would drop the copy tokens (``<h1>`` ..): this decodes ``completion_ids`` itself, up to
    the first end-of-sequence token. The figures of the last batch (IL-GRPO's curve keys) stay
    in :attr:`figures` for the curve."""

    __name__ = "summed_reward"  # TRL names a reward function by it

    def __init__(
        self,
        prompts: Sequence[GrpoPrompt],
        config: GRPOConfig,
        tokenizer: Any,
        ctr: CtrScorer | None = None,
    ) -> None:
        self.prompts, self.config, self.tokenizer, self.ctr = prompts, config, tokenizer, ctr
        self.eos_id = int(tokenizer.eos_token_id)
        self.figures: dict[str, float] | None = None
        self.seen: list[tuple[int, ...]] = []
        """the prompt index of each completion, per call (which prompts each step trained on)"""

    def text(self, ids: Sequence[int]) -> str:
        """A completion's text: its tokens before the first end-of-sequence, copy tokens kept."""
        ids = list(ids)
        if self.eos_id in ids:
            ids = ids[: ids.index(self.eos_id)]
        return str(self.tokenizer.decode(ids, skip_special_tokens=False))

    def rollouts(self, texts: Sequence[str], index: Sequence[int]) -> list[Rollout]:
        """The rewards of each text, the completion of prompt ``index[n]``."""
        return score_texts(texts, [self.prompts[i] for i in index], self.config, self.ctr)

    def __call__(
        self,
        prompts: Sequence[str],
        completions: Sequence[str],
        completion_ids: Sequence[Sequence[int]],
        index: Sequence[int],
        **_: Any,
    ) -> list[float | None]:
        self.seen.append(tuple(index))
        rollouts = self.rollouts([self.text(ids) for ids in completion_ids], index)
        self.figures = step_figures(rollouts, torch.ones(1, dtype=torch.bool), self.config)
        return [r.total for r in rollouts]


def prompt_texts(tokenizer: Any, prompts: Sequence[str], max_tokens: int) -> list[str]:
    """Each prompt as TRL will tokenize it: the newest ``max_tokens`` tokens (as
    :func:`~training.grpo_rollout.encode_prompts`), decoded back to text where it was cut."""
    full = tokenizer(list(prompts), add_special_tokens=False).input_ids
    return [
        text
        if len(ids) <= max_tokens
        else str(tokenizer.decode(ids[-max_tokens:], skip_special_tokens=False))
        for text, ids in zip(prompts, full, strict=True)
    ]


def snapshot(model: Any) -> tuple[dict[str, Any], Any]:
    """What the trainers rewrite on the model and must not reach the saved folder: the
    config's special tokens and ``use_cache`` (transformers aligns them with the tokenizer,
    whose BOS is None, and turns the cache off), and the generation config."""
    keys = ("bos_token_id", "eos_token_id", "pad_token_id", "use_cache")
    return {k: getattr(model.config, k, None) for k in keys}, copy.deepcopy(model.generation_config)


def restore(model: Any, saved: tuple[dict[str, Any], Any]) -> None:
    """Undo what :func:`snapshot` saved."""
    for key, value in saved[0].items():
        setattr(model.config, key, value)
    model.generation_config = saved[1]


def trl_args(config: GRPOConfig, scratch: str) -> Any:
    """``trl.GRPOConfig`` for ``config`` (the mapping in the module doc)."""
    from trl.trainer.grpo_config import GRPOConfig as TrlConfig

    return TrlConfig(
        output_dir=scratch, seed=config.seed, use_cpu=True, bf16=False, fp16=False,
        report_to="none", save_strategy="no", logging_steps=1, disable_tqdm=True,
        gradient_checkpointing=False, dataloader_pin_memory=False,
        shuffle_dataset=False, num_generations=config.group,
        per_device_train_batch_size=config.prompts_per_step * config.group,
        gradient_accumulation_steps=1, steps_per_generation=1,
        num_iterations=config.inner_steps, max_steps=config.steps * config.inner_steps,
        temperature=config.temperature, top_k=config.top_k, top_p=1.0,
        max_completion_length=config.max_new_tokens,
        learning_rate=config.lr, lr_scheduler_type="constant", warmup_steps=0,
        optim="adamw_torch", adam_beta1=0.9, adam_beta2=0.99, weight_decay=0.0,
        max_grad_norm=config.grad_clip, beta=0.0, loss_type="dapo",
        epsilon=config.eps_low, epsilon_high=config.eps_high, scale_rewards="group",
        entropy_coef=config.entropy_start,
    )  # fmt: skip


def curve_callback(
    config: GRPOConfig,
    reward: SummedReward,
    curve: list[dict[str, float]],
    progress: Progress | None,
) -> Any:
    """A ``TrainerCallback`` that sets each step's entropy weight (IL-GRPO's schedule) and
    closes a curve row after each rollout step's last update. Its ``trainer`` is set after
    the trainer is made (the trainer takes its callbacks when it is made)."""
    from transformers import TrainerCallback

    class Curve(TrainerCallback):
        trainer: Any = None
        tick = time.perf_counter()

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.tick = time.perf_counter()

        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            step = state.global_step // config.inner_steps
            self.trainer.entropy_coef = entropy_weight(step, config.steps, config.entropy_start)

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if reward.figures is None or not logs or "loss" not in logs:
                return
            if state.global_step % config.inner_steps:
                return
            now = time.perf_counter()
            row = reward.figures | {
                "entropy": float(logs.get("entropy", float("nan"))),
                "loss": float(logs["loss"]),
                "clipped": float(logs.get("clip_ratio/region_mean", float("nan"))),
                "step": float(len(curve) + 1),
                "seconds": now - self.tick,
            }
            self.tick, reward.figures = now, None
            curve.append(row)
            if progress is not None:
                progress(len(curve), config.steps, row)

    return Curve()


def train_plain(
    prompts: Sequence[GrpoPrompt],
    config: GRPOConfig,
    registry: Registry,
    data: dict[str, Any],
    ctr: CtrScorer | None = None,
    ctr_tag: str = "",
    progress: Progress | None = None,
    publish: bool = True,
) -> GRPOResult:
    """Plain GRPO on ``prompts`` into a new version of ``registry``, kind ``grpo-plain``
    (arguments as :func:`training.grpo.train`'s)."""
    import datasets
    from transformers import PrinterCallback
    from trl.trainer.grpo_trainer import GRPOTrainer

    if not prompts:
        raise TrainingError("no prompts to train on")
    if config.threads:
        torch.set_num_threads(config.threads)
    model, tokenizer, parent = load_policy(config, registry)
    probe = prompts[0].prompt
    if tokenizer(probe).input_ids != tokenizer(probe, add_special_tokens=False).input_ids:
        raise TrainingError("TRL would add special tokens to the prompts, IL-GRPO does not")
    target = registry.reserve(config.name)
    schedule = prompt_schedule(len(prompts), config)
    order = [i for step in schedule for i in step]
    used = sorted(set(order))  # the prompts the schedule reaches, tokenized once each
    cut = prompt_texts(tokenizer, [prompts[i].prompt for i in used], config.max_prompt_tokens)
    texts = dict(zip(used, cut, strict=True))
    dataset = datasets.Dataset.from_dict({"prompt": [texts[i] for i in order], "index": order})
    reward = SummedReward(prompts, config, tokenizer, ctr)
    saved = snapshot(model)
    curve: list[dict[str, float]] = []
    started = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="grpo-plain-") as scratch:
            callback = curve_callback(config, reward, curve, progress)
            trainer = GRPOTrainer(
                model=model, reward_funcs=[reward], args=trl_args(config, scratch),
                train_dataset=dataset, processing_class=tokenizer, callbacks=[callback],
            )  # fmt: skip
            trainer.remove_callback(PrinterCallback)
            callback.trainer = trainer
            trainer.train()
        g = config.group
        if reward.seen != [tuple(i for i in step for _ in range(g)) for step in schedule]:
            raise TrainingError("TRL sampled other prompts than IL-GRPO's schedule")
    except BaseException:  # nothing was published: leave no half-written version behind
        shutil.rmtree(target.path, ignore_errors=True)
        raise
    restore(model, saved)
    return save_run(model, tokenizer, target, registry, config, curve, data, parent, ctr_tag,
                    time.perf_counter() - started, publish, kind=KIND)  # fmt: skip
