"""IL-GRPO (paper, "IL-GRPO"): list-level RL with a per-slot advantage, on an IL-SFT model.

Read top to bottom: config, rollouts, rewards, the update, the run, saving.

Each step is on-policy: ``prompts_per_step`` prompts (a seeded walk over the training
prompts, :mod:`training.grpo_data`), ``group`` rollouts each, sampled from the current model
(temperature 1, top-k 100, as in the paper). Every rollout's lines are scored slot by slot
against the reference list (:mod:`training.grpo_rewards`) and the prompts whose mean score is
outside ``[filter_low, filter_high]`` are dropped (too hard or already solved: their
advantages are noise). Each token of query ``j`` gets query ``j``'s reward normalised over the
group at slot ``j``, plus ``lam`` times the group-normalised sequence reward
(:mod:`training.grpo_math`); the model then takes ``inner_steps`` clipped-surrogate steps on
that batch (from the second one the ratio moves and the clip acts: tokens at or above the
batch's 80th entropy percentile may move by ``eps_high``, the rest by ``eps_low``), with an
entropy bonus whose weight decays linearly over the run.

AIGQ-Think prompts (:func:`training.grpo_data.think_grpo_prompt`) run the same loop: their
query lines are scored as a Direct list, their trigger lines by ROUGE-L against the reference's
trigger sets, and each trigger token gets its trigger slot's group-normalised advantage
(:mod:`training.grpo_think`); the curve then also records ``trigger_reward``.

Rollouts are sampled in-process with transformers' ``generate`` (on the CPU here;
:mod:`training.grpo_rollout`). The result
is a plain model folder in the registry, kind ``il-grpo``, with the run's curve
(``grpo_log.json``: reward, entropy, the filter's kept share per step) and its manifest
(``grpo_run.json``, also when the run is not published) beside it.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

from aigq.registry import DEFAULT_NAME, ModelRef, Registry
from training import TrainingError
from training.grpo_data import CtrScorer, GrpoPrompt, slot_ctr
from training.grpo_math import (
    advantages,
    clip_eps,
    clipped_loss,
    entropy_weight,
    keep_prompts,
    think_token_advantages,
    token_advantages,
    token_entropy,
)
from training.grpo_rewards import RewardConfig, Rollout, score_rollout, slot_queries
from training.grpo_rollout import Batch, Pieces, Sampling, rollout
from training.grpo_think import mean_trigger_reward, query_lines, trigger_rows, with_triggers

LOG_FILE = "grpo_log.json"
RUN_FILE = "grpo_run.json"
Progress = Callable[[int, int, dict[str, float]], None]


@dataclass
class GRPOConfig:
    """One IL-GRPO run. Defaults: the shipped tiny model, minutes on a 2-core CPU."""

    base: str = DEFAULT_NAME
    """the IL-SFT model to start from: a registry spec (name, name@version) or a folder"""
    name: str = DEFAULT_NAME
    """registry name the result is published under"""
    steps: int = 100
    """rollout steps (each: sample, score, ``inner_steps`` optimizer steps)"""
    prompts_per_step: int = 8
    group: int = 8
    """G: rollouts per prompt (the paper's 8)"""
    temperature: float = 1.0
    top_k: int = 100
    max_new_tokens: int = 64
    max_prompt_tokens: int = 320
    """longer prompts keep their newest tokens (as in IL-SFT)"""
    inner_steps: int = 2
    """optimizer steps per rollout batch (the ratio, and so the clip, acts from the second)"""
    lr: float = 1e-4
    lam: float = 0.5
    """weight of the sequence advantage added to each slot's"""
    eps_low: float = 0.2
    eps_high: float = 0.28
    """clip range of tokens at or above the batch's ``entropy_quantile`` entropy"""
    entropy_quantile: float = 0.8
    entropy_start: float = 1e-3
    """the entropy bonus's weight at step 0 (linearly down to 0 at the last step)"""
    filter_low: float = 0.1
    filter_high: float = 0.95
    """the difficulty filter: keep prompts whose mean rollout score is within these"""
    reward_clip: float = 10.0
    adv_clip: float = 2.0
    adv_eps: float = 1e-4
    grad_clip: float = 1.0
    seed: int = 0
    threads: int = 0
    """torch CPU threads (0: torch's default)"""
    rewards: RewardConfig = field(default_factory=RewardConfig)

    def __post_init__(self) -> None:
        if min(self.steps, self.prompts_per_step, self.inner_steps, self.max_new_tokens) < 1:
            raise TrainingError("steps, prompts_per_step, inner_steps, max_new_tokens: >= 1")
        if self.group < 2:
            raise TrainingError(f"group must be >= 2 (advantages are relative), got {self.group}")
        if not 0.0 <= self.eps_low <= self.eps_high:
            raise TrainingError("need 0 <= eps_low <= eps_high")
        if not 0.0 <= self.filter_low <= self.filter_high <= 1.0:
            raise TrainingError("need 0 <= filter_low <= filter_high <= 1")
        if not 0.0 < self.entropy_quantile < 1.0:
            raise TrainingError("entropy_quantile must be in (0, 1)")
        if self.lr <= 0 or self.temperature <= 0 or self.top_k < 0:
            raise TrainingError("lr and temperature must be > 0, top_k >= 0")

    @property
    def sampling(self) -> Sampling:
        return Sampling(self.group, self.temperature, self.top_k, self.max_new_tokens,
                        self.max_prompt_tokens)  # fmt: skip


@dataclass
class GRPOResult:
    """The trained folder, its figures, the per-step curve, and its manifest."""

    model: ModelRef
    metrics: dict[str, float]
    curve: list[dict[str, float]]
    manifest: dict[str, Any] = field(default_factory=dict)
    published: bool = True


# ---------------------------------------------------------------------------- rewards
def score_texts(
    texts: Sequence[str], owners: Sequence[GrpoPrompt], config: GRPOConfig, ctr: CtrScorer | None
) -> list[Rollout]:
    """The rewards of each completion text, ``texts[n]`` written for ``owners[n]`` (the CTR
    model scores them all at once). Plain GRPO's reward (:mod:`training.grpo_plain`) too."""
    rc = config.rewards
    # a Think rollout's query slots are its query lines only (training.grpo_think)
    lines = [query_lines(t) if p.is_think else t for t, p in zip(texts, owners, strict=True)]
    judged = [slot_queries(t, p.shown, rc) for t, p in zip(lines, owners, strict=True)]
    p_ctr = slot_ctr([(p, q) for p, (q, _) in zip(owners, judged, strict=True)], ctr)
    scored = [
        score_rollout(q, v, p.references, c, rc)
        for p, (q, v), c in zip(owners, judged, p_ctr, strict=True)
    ]
    return [
        with_triggers(r, t, p) if p.is_think else r
        for r, t, p in zip(scored, texts, owners, strict=True)
    ]


def score_batch(
    batch: Batch, prompts: Sequence[GrpoPrompt], config: GRPOConfig, ctr: CtrScorer | None
) -> list[Rollout]:
    """Every rollout's rewards, in row order (row ``n`` is prompt ``n // group``'s)."""
    owners = [prompts[n // config.group] for n in range(len(batch.texts))]
    return score_texts(batch.texts, owners, config, ctr)


# ---------------------------------------------------------------------------- the update
def completion_logits(model: Any, batch: Batch, rows: Tensor) -> Tensor:
    """The logits that predict each completion token of ``rows``: ``[n, T, V]``.

    Only the completion's positions go through the vocabulary projection (the last ``T + 1``
    positions; the one before the first completion token predicts it)."""
    ids, mask = batch.ids[rows], batch.mask[rows]
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    t = batch.completion.shape[1]
    logits: Tensor = model(
        input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=t + 1
    ).logits
    return logits[:, :-1].float()


def token_logp(logits: Tensor, tokens: Tensor) -> Tensor:
    """log p of each token under ``logits`` (``[n, T, V]``, ``[n, T]`` -> ``[n, T]``)."""
    logp: Tensor = torch.log_softmax(logits, dim=-1)
    return logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def update(
    model: Any,
    optimizer: torch.optim.Optimizer,
    batch: Batch,
    rows: Tensor,
    adv: Tensor,
    config: GRPOConfig,
    step: int,
) -> dict[str, float]:
    """``inner_steps`` clipped-surrogate steps on ``rows`` of ``batch`` with token advantages
    ``adv`` (``[len(rows), T]``)."""
    tokens, mask = batch.completion[rows], batch.completion_mask[rows]
    with torch.no_grad():
        model.eval()
        old_logp = token_logp(completion_logits(model, batch, rows), tokens)
    model.train()
    weight = entropy_weight(step, config.steps, config.entropy_start)
    figures: dict[str, float] = {}
    for _ in range(config.inner_steps):
        logits = completion_logits(model, batch, rows)
        logp = token_logp(logits, tokens)
        entropy = token_entropy(logits)
        eps = clip_eps(entropy.detach(), mask, config.eps_low, config.eps_high,
                       config.entropy_quantile)  # fmt: skip
        surrogate, bound = clipped_loss(logp, old_logp, adv, eps, mask)
        m = mask.float()
        mean_entropy = (entropy * m).sum() / m.sum().clamp(min=1.0)
        loss = surrogate - weight * mean_entropy
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        figures = {"loss": loss.item(), "entropy": mean_entropy.item(), "clipped": bound.item()}
    return figures


# ---------------------------------------------------------------------------- the run
def load_policy(config: GRPOConfig, registry: Registry) -> tuple[Any, Any, str]:
    """(model, tokenizer, parent tag) of ``config.base``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ref = registry.resolve(config.base)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(ref.path))
        model = AutoModelForCausalLM.from_pretrained(str(ref.path), dtype=torch.float32)
    except (OSError, ValueError) as exc:
        raise TrainingError(f"cannot load the policy {config.base!r}: {exc}") from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer, ref.tag


def prompt_schedule(n: int, config: GRPOConfig) -> list[list[int]]:
    """The prompt indices of each step: a seeded shuffle, walked in order (again when spent)."""
    rng = random.Random(config.seed)
    order: list[int] = []
    need = config.steps * config.prompts_per_step
    while len(order) < need:
        epoch = list(range(n))
        rng.shuffle(epoch)
        order += epoch
    k = config.prompts_per_step
    return [order[s * k : (s + 1) * k] for s in range(config.steps)]


def step_figures(rollouts: Sequence[Rollout], keep: Tensor, config: GRPOConfig) -> dict[str, float]:
    """What one step's curve records (all rollouts, before the filter)."""
    n = max(1, len(rollouts))
    figures = {
        "reward": sum(r.total for r in rollouts) / n,
        "score": sum(r.score(config.rewards) for r in rollouts) / n,
        "query_reward": sum(sum(r.query) / len(r.query) for r in rollouts) / n,
        "sequence_reward": sum(r.sequence for r in rollouts) / n,
        "kept": float(keep.float().mean()),
    }
    trigger = mean_trigger_reward(rollouts)
    return figures if trigger is None else figures | {"trigger_reward": trigger}


def train(
    prompts: Sequence[GrpoPrompt],
    config: GRPOConfig,
    registry: Registry,
    data: dict[str, Any],
    ctr: CtrScorer | None = None,
    ctr_tag: str = "",
    progress: Progress | None = None,
    publish: bool = True,
) -> GRPOResult:
    """IL-GRPO on ``prompts`` into a new version of ``registry`` (``data`` goes to the
    manifest); ``ctr`` is the CTR model's scorer (None: the CTR reward is 0)."""
    if not prompts:
        raise TrainingError("no prompts to train on")
    if len({p.is_think for p in prompts}) > 1:  # a step's batch must be one kind
        raise TrainingError("the prompts mix Direct and Think ones: train them apart")
    torch.manual_seed(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    model, tokenizer, parent = load_policy(config, registry)
    target = registry.reserve(config.name)
    try:
        curve, seconds = _loop(model, tokenizer, prompts, config, ctr, progress)
    except BaseException:  # nothing was published: leave no half-written version behind
        shutil.rmtree(target.path, ignore_errors=True)
        raise
    return save_run(model, tokenizer, target, registry, config, curve, data, parent, ctr_tag,
                    seconds, publish)  # fmt: skip


def batch_advantages(
    batch: Batch,
    rollouts: Sequence[Rollout],
    rows: Tensor,
    slot_adv: Tensor,
    rest: Tensor,
    config: GRPOConfig,
) -> Tensor:
    """The token advantages ``[len(rows), T]`` of ``rows`` from the slot advantages
    ``[P, G, K]`` and the sequence part ``[P, G]``; a Think batch's trigger tokens get their
    trigger slot's own (:func:`training.grpo_think.trigger_rows`)."""
    slot, sequence = slot_adv.view(-1, slot_adv.shape[-1])[rows], rest.view(-1)[rows]
    if batch.trigger_slots is None:
        return token_advantages(slot, sequence, batch.slots[rows])
    trigger = trigger_rows(rollouts, rest, config.adv_eps, config.reward_clip, config.adv_clip)
    return think_token_advantages(
        trigger[rows], slot, sequence, batch.trigger_slots[rows], batch.slots[rows]
    )


def _loop(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[GrpoPrompt],
    config: GRPOConfig,
    ctr: CtrScorer | None,
    progress: Progress | None,
) -> tuple[list[dict[str, float]], float]:
    """The steps of the module doc; the curve and the seconds they took."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, betas=(0.9, 0.99),
                                  weight_decay=0.0)  # fmt: skip
    pieces = Pieces(tokenizer)
    g = config.group
    curve: list[dict[str, float]] = []
    started = time.perf_counter()
    for step, index in enumerate(prompt_schedule(len(prompts), config)):
        tick = time.perf_counter()
        chosen = [prompts[i] for i in index]
        batch = rollout(model, tokenizer, chosen, config.sampling, pieces)
        rollouts = score_batch(batch, chosen, config, ctr)
        shape = (len(chosen), g)
        query = torch.tensor([r.query for r in rollouts]).view(*shape, -1)
        sequence = torch.tensor([r.sequence for r in rollouts]).view(shape)
        scores = torch.tensor([r.score(config.rewards) for r in rollouts]).view(shape)
        keep = keep_prompts(scores, config.filter_low, config.filter_high)
        figures = step_figures(rollouts, keep, config)
        if keep.any():
            slot_adv, rest = advantages(query, sequence, config.lam, config.adv_eps,
                                        config.reward_clip, config.adv_clip)  # fmt: skip
            rows = keep.repeat_interleave(g).nonzero().squeeze(1)
            adv = batch_advantages(batch, rollouts, rows, slot_adv, rest, config)
            figures |= update(model, optimizer, batch, rows, adv, config, step)
        figures |= {"step": float(step + 1), "seconds": time.perf_counter() - tick}
        curve.append(figures)
        if progress is not None:
            progress(step + 1, config.steps, figures)
    return curve, time.perf_counter() - started


# ---------------------------------------------------------------------------- saving
def _mean(curve: Sequence[dict[str, float]], key: str, last: int) -> float:
    values = [row[key] for row in curve[-last:] if key in row]
    return sum(values) / len(values) if values else float("nan")


def save_run(
    model: Any,
    tokenizer: Any,
    target: ModelRef,
    registry: Registry,
    config: GRPOConfig,
    curve: list[dict[str, float]],
    data: dict[str, Any],
    parent: str,
    ctr_tag: str,
    seconds: float,
    publish: bool,
    kind: str = "il-grpo",
) -> GRPOResult:
    """The policy, tokenizer and curve into ``target``; published unless ``publish`` is
    False (the trainer judges a candidate first). Plain GRPO saves through here too."""
    model.save_pretrained(str(target.path))
    tokenizer.save_pretrained(str(target.path))
    (target.path / LOG_FILE).write_text(json.dumps(curve))
    n = len(curve)
    metrics = {
        "steps": float(n),
        "optimizer_steps": float(sum("loss" in row for row in curve) * config.inner_steps),
        "train_seconds": seconds,
        "reward_first": _mean(curve[: max(1, n // 10)], "reward", n),
        "reward_last": _mean(curve, "reward", max(1, n // 10)),
        "entropy_last": _mean(curve, "entropy", max(1, n // 10)),
        "kept_share": _mean(curve, "kept", n),
    }
    manifest = {
        "kind": kind,
        "parent": parent,
        "ctr": ctr_tag,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": asdict(config),
        "data": data,
        "metrics": metrics,
    }
    # what it was (or will be) published with, also beside an unpublished candidate
    (target.path / RUN_FILE).write_text(json.dumps(manifest, indent=2))
    if not publish:
        return GRPOResult(target, metrics, curve, manifest, published=False)
    return GRPOResult(registry.publish(target, manifest), metrics, curve, manifest)
