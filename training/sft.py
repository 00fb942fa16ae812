"""IL-SFT (paper §3.3): causal-LM loss on the ordered target list only, the prompt masked.

Read top to bottom: config, data, model, loop, save. The samples come from
:mod:`training.samples` (so the prompt is the generator worker's own) and the result is a
versioned folder in :mod:`aigq.registry` that ``aigq generate`` and vLLM load as is.

Two starting points:

- ``base="tiny"`` (the embedded default): a word-level tokenizer trained on this run's
  targets (so the model can only write words users searched) and a small Qwen3 with random
  weights (:mod:`training.tiny`). Nothing is downloaded; it trains on a CPU in minutes.
- any Hugging Face causal-LM folder (a registry spec or a path: SmolLM2, Qwen3...), optionally
  with LoRA adapters (peft) that are merged into the weights when saving.

Either way the prompt's special tokens are added by :func:`generators.tokens.add_special_tokens`,
which starts each one at the mean of its words' sub-word embeddings.

Resuming: every ``checkpoint_every`` steps the model, optimizer, step and RNG state go to
``<version>/checkpoint/``; ``resume=`` that version continues where it stopped, with the same
batches in the same order (the order is a function of the seed alone).
"""

from __future__ import annotations

import math
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from aigq.registry import DEFAULT_NAME, ModelRef, Registry
from generators.output import expand_copies
from generators.prompt import SPECIAL_TOKENS, TOKEN_WORDS, compressed_prompt, shown_history
from generators.think import trigger_line
from generators.tokens import add_special_tokens
from training import TrainingError
from training.tiny import EOS, TinyConfig, new_tiny_model, new_tokenizer

IGNORE = -100  # label of a position the loss skips (the prompt, the padding)


@dataclass
class SFTConfig:
    """What one IL-SFT run does. Defaults: the tiny embedded model, a few minutes on a CPU."""

    base: str = "tiny"
    """"tiny" (new model + tokenizer), or a model folder / registry spec to fine-tune"""
    name: str = DEFAULT_NAME
    """registry name the result is published under"""
    k: int = 10
    """queries per target list (the prompt asks for this many)"""
    max_prompt_tokens: int = 320
    """longer prompts lose their oldest tokens (the instruction is re-attached)"""
    max_target_tokens: int = 96
    """longer targets are cut (at a line end when one is near)"""
    epochs: float = 1.0
    max_steps: int = 0
    """stop after this many optimizer steps (0: run ``epochs``)"""
    batch_size: int = 32
    lr: float = 3e-3
    """peak learning rate (the tiny model wants ~3e-3; pretrained ones ~5e-5, LoRA ~2e-4)"""
    warmup_steps: int = 30
    min_lr_ratio: float = 0.1
    """cosine decay ends at lr * this"""
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    val_fraction: float = 0.03
    """share of samples kept out of training to report a validation loss"""
    eval_every: int = 100
    checkpoint_every: int = 200
    seed: int = 0
    threads: int = 0
    """torch CPU threads (0: torch's default)"""
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    tiny: TinyConfig = field(default_factory=TinyConfig)

    def __post_init__(self) -> None:
        if self.k < 1 or self.batch_size < 1:
            raise TrainingError("k and batch_size must be >= 1")
        if self.epochs <= 0 and self.max_steps <= 0:
            raise TrainingError("give epochs > 0 or max_steps > 0")
        if not 0.0 <= self.val_fraction < 0.5:
            raise TrainingError(f"val_fraction must be in [0, 0.5), got {self.val_fraction}")
        if self.lr <= 0 or not 0.0 <= self.min_lr_ratio <= 1.0:
            raise TrainingError("lr must be > 0 and min_lr_ratio in [0, 1]")
        if self.max_prompt_tokens < 16 or self.max_target_tokens < 8:
            raise TrainingError("max_prompt_tokens must be >= 16 and max_target_tokens >= 8")
        if self.lora and self.base == "tiny":
            raise TrainingError("LoRA is for pretrained bases; the tiny model trains fully")


@dataclass(frozen=True)
class Pair:
    """One training example as text: the prompt, and the target list it should produce."""

    prompt: str
    target: str


@dataclass
class SFTResult:
    """The trained model's folder, its figures, and the manifest it is (or will be) published
    with: ``published`` is False when :func:`train` was told not to publish (the trainer
    judges a candidate first, then publishes it with this manifest)."""

    model: ModelRef
    metrics: dict[str, float]
    manifest: dict[str, Any] = field(default_factory=dict)
    published: bool = True


# ---------------------------------------------------------------------------- data
def encode(tokenizer: Any, pair: Pair, config: SFTConfig) -> tuple[list[int], list[int]]:
    """Token ids and labels: the prompt's labels are IGNORE, the target's are its ids + EOS.

    A target query with a word the vocabulary lacks (``<unk>``, word-level tokenizer) is left
    out of the target: the model must never learn to write ``<unk>``, which decodes to nothing
    and would leave a query with a word missing.
    """
    prompt = tokenizer(pair.prompt, add_special_tokens=False).input_ids
    target = tokenizer(_known_lines(tokenizer, pair.target), add_special_tokens=False).input_ids
    target = [*target[: config.max_target_tokens], tokenizer.eos_token_id]
    if len(prompt) > config.max_prompt_tokens:  # keep the newest context
        prompt = prompt[-config.max_prompt_tokens :]
    return prompt + target, [IGNORE] * len(prompt) + target


def _known_lines(tokenizer: Any, target: str) -> str:
    """``target``'s lines (queries) without the ones holding an unknown word; in a Think
    target (:mod:`generators.think`), a trigger line left with no query line under it goes
    too, so the model never learns to open a pair and write nothing in it."""
    unk = tokenizer.unk_token_id
    if unk is None:
        return target
    lines = target.split("\n")
    ids = tokenizer(lines, add_special_tokens=False).input_ids
    kept = [line for line, line_ids in zip(lines, ids, strict=True) if unk not in line_ids]
    return "\n".join(
        line
        for i, line in enumerate(kept)
        if trigger_line(line) is None
        or (i + 1 < len(kept) and kept[i + 1].strip() and trigger_line(kept[i + 1]) is None)
    )


def vocabulary_texts(pairs: Sequence[Pair], kind: str) -> list[str]:
    """What a new tokenizer learns its vocabulary from.

    BPE: the prompts and targets. Word-level: the targets, copy tokens expanded (queries users
    searched: every word the model can write is one of them), plus the prompt's own words
    (``Recommend``, ``Behaviors:``, the braces) from a prompt without its special tokens,
    repeated so that a vocabulary cut by frequency keeps them; other prompt words it lacks
    are ``<unk>`` there.
    """
    if kind == "bpe":
        return [text for pair in pairs for text in (pair.prompt, pair.target)]
    # a copied history query's words count as the target's: they are the user's words too
    targets = [expand_copies(pair.target, shown_history(pair.prompt)) for pair in pairs]
    frame = compressed_prompt(
        [("t:interest", 1.0)], [(0, "search", "query", "")], now_ms=0, history=["query"]
    )
    for token in SPECIAL_TOKENS:
        frame = frame.replace(token, "")
    return targets + [frame] * max(100, len(targets) // 10)


def batches(
    encoded: Sequence[tuple[list[int], list[int]]], batch_size: int, seed: int
) -> list[list[int]]:
    """Index batches of similar lengths (less padding), in a seeded random order.

    Shuffle, sort within windows of 50 batches by length, cut into batches, shuffle those.
    """
    rng = random.Random(seed)
    order = list(range(len(encoded)))
    rng.shuffle(order)
    window = batch_size * 50
    out: list[list[int]] = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: len(encoded[i][0]))
        out.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(out)
    return out


def collate(
    encoded: Sequence[tuple[list[int], list[int]]], index: Sequence[int], pad_id: int
) -> dict[str, torch.Tensor]:
    """Left-padded input ids, attention mask, position ids and labels of one batch.

    Left padding puts every row's target at the end, so the loss needs the logits of the last
    few positions only (:func:`lm_loss`); position ids count from each row's first real token,
    as they do at generation time, where nothing is padded.
    """
    width = max(len(encoded[i][0]) for i in index)
    ids = torch.full((len(index), width), pad_id, dtype=torch.long)
    labels = torch.full((len(index), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(index), width), dtype=torch.long)
    for row, i in enumerate(index):
        tokens, target = encoded[i]
        ids[row, width - len(tokens) :] = torch.tensor(tokens)
        labels[row, width - len(target) :] = torch.tensor(target)
        mask[row, width - len(tokens) :] = 1
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    return {"input_ids": ids, "attention_mask": mask, "position_ids": positions, "labels": labels}


def lm_loss(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Mean cross-entropy over the target tokens, and how many there are.

    The vocabulary projection is most of a small model's cost, and only the target positions
    need it: with left padding they are the last ``keep`` positions of every row (the first
    target token is predicted from the last prompt position, hence the + 1).
    """
    labels = batch["labels"]
    targets = labels != IGNORE
    keep = int(targets.sum(dim=1).max()) + 1
    logits = model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        position_ids=batch["position_ids"],
        logits_to_keep=keep,
    ).logits
    shifted = labels[:, -keep:][:, 1:]
    loss = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
        shifted.reshape(-1),
        ignore_index=IGNORE,
    )
    return loss, int(targets.sum())


def lr_at(step: int, total: int, config: SFTConfig) -> float:
    """Linear warm-up, then cosine decay to ``lr * min_lr_ratio``."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = min(1.0, (step - config.warmup_steps) / max(1, total - config.warmup_steps))
    floor = config.lr * config.min_lr_ratio
    return floor + (config.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


# ---------------------------------------------------------------------------- model
def load_base(config: SFTConfig, pairs: Sequence[Pair], registry: Registry) -> tuple[Any, Any, str]:
    """(model, tokenizer, parent tag) with the prompt's special tokens added and initialised."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if config.base == "tiny":
        # The tokenizer learns this run's text; the special tokens are added afterwards, so
        # they get the mean of their words' sub-word embeddings like on any other base.
        texts = vocabulary_texts(pairs, config.tiny.tokenizer)
        tokenizer = new_tokenizer(texts, config.tiny, special=False)
        model = new_tiny_model(tokenizer, config.tiny)
        parent = "tiny (new)"
    else:
        ref = registry.resolve(config.base)
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(ref.path))
            model = AutoModelForCausalLM.from_pretrained(str(ref.path), dtype=torch.float32)
        except (OSError, ValueError) as exc:
            raise TrainingError(f"cannot load base model {config.base!r}: {exc}") from exc
        parent = ref.tag
    if tokenizer.eos_token is None:
        tokenizer.eos_token = EOS
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    add_special_tokens(tokenizer, model, TOKEN_WORDS)
    if config.lora:
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError as exc:
            raise TrainingError("LoRA needs peft: pip install 'aigq-nearline[train]'") from exc
        tied = bool(getattr(model.config, "tie_word_embeddings", False))
        lora = LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            target_modules="all-linear",
            # the new tokens' rows must learn; a tied head follows its embedding
            modules_to_save=["embed_tokens"] if tied else ["embed_tokens", "lm_head"],
            ensure_weight_tying=tied,
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, lora)
    return model, tokenizer, parent


@torch.no_grad()
def validation_loss(
    model: Any, encoded: Sequence[tuple[list[int], list[int]]], pad_id: int, batch_size: int
) -> float:
    """Mean loss per target token over ``encoded``."""
    model.eval()
    total, count = 0.0, 0
    for index in batches(encoded, batch_size, seed=0):
        loss, tokens = lm_loss(model, collate(encoded, index, pad_id))
        total += loss.item() * tokens
        count += tokens
    model.train()
    return total / max(1, count)


# ---------------------------------------------------------------------------- the run
def train(
    pairs: Sequence[Pair],
    config: SFTConfig,
    registry: Registry,
    data: dict[str, Any],
    resume: ModelRef | None = None,
    progress: Callable[[int, int, dict[str, float]], None] | None = None,
    publish: bool = True,
) -> SFTResult:
    """Train on ``pairs`` into a new version of ``registry``; ``data`` goes to the manifest.

    ``publish=False`` leaves the version reserved and unpublished (no manifest, LATEST
    untouched): a candidate that nothing loads until somebody publishes it."""
    if len(pairs) < 2:
        raise TrainingError(f"need at least 2 training pairs, got {len(pairs)}")
    torch.manual_seed(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)

    # Validation pairs are a fixed, seeded slice, so a resumed run splits the same way.
    order = list(range(len(pairs)))
    random.Random(config.seed).shuffle(order)
    n_val = int(len(pairs) * config.val_fraction)
    val_pairs = [pairs[i] for i in order[:n_val]]
    train_pairs = [pairs[i] for i in order[n_val:]]

    started = time.perf_counter()
    if resume is not None:  # the model and tokenizer as the checkpoint left them
        model, tokenizer, parent = _load_checkpoint(resume, config)
        target = resume
    else:
        model, tokenizer, parent = load_base(config, train_pairs, registry)
        target = registry.reserve(config.name)
    pad_id = int(tokenizer.pad_token_id)
    encoded = [encode(tokenizer, pair, config) for pair in train_pairs]
    val_encoded = [encode(tokenizer, pair, config) for pair in val_pairs]
    per_epoch = batches(encoded, config.batch_size, config.seed)
    total = config.max_steps or max(1, int(len(per_epoch) * config.epochs))
    schedule = [
        b for epoch in range(math.ceil(total / len(per_epoch)))
        for b in batches(encoded, config.batch_size, config.seed + epoch)
    ][:total]  # fmt: skip

    params = sum(p.numel() for p in model.parameters())
    trainable = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in trainable if p.dim() >= 2]  # no weight decay on norms and biases
    no_decay = [p for p in trainable if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=config.lr,
        betas=(0.9, 0.95),
    )
    step, tokens_seen, losses = 0, 0, list[float]()
    if resume is not None:
        state = torch.load(resume.path / "checkpoint" / "state.pt", weights_only=False)
        optimizer.load_state_dict(state["optimizer"])
        step, tokens_seen, losses = state["step"], state["tokens"], state["losses"]
        parent = state["parent"]
        torch.set_rng_state(state["rng"])
    else:
        tokenizer.save_pretrained(str(target.path / "checkpoint"))

    model.train()
    val_loss = float("nan")
    loop_started, loop_tokens = time.perf_counter(), 0
    while step < total:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, total, config)
        batch = collate(encoded, schedule[step], pad_id)
        loss, _ = lm_loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(trainable, config.grad_clip)
        optimizer.step()
        step += 1
        count = int(batch["attention_mask"].sum())
        tokens_seen += count
        loop_tokens += count
        losses.append(loss.item())
        if val_encoded and (step % config.eval_every == 0 or step == total):
            val_loss = validation_loss(model, val_encoded, pad_id, config.batch_size)
        if step % config.checkpoint_every == 0 and step < total:
            _save_checkpoint(target, model, optimizer, step, tokens_seen, losses, parent)
        if progress is not None:
            elapsed = time.perf_counter() - loop_started
            progress(step, total, {
                "loss": sum(losses[-20:]) / len(losses[-20:]), "val_loss": val_loss,
                "lr": lr_at(step - 1, total, config), "tokens_per_s": loop_tokens / elapsed,
            })  # fmt: skip

    train_seconds = time.perf_counter() - started
    if config.lora:
        model = model.merge_and_unload()  # one plain folder that vLLM and transformers load
    model.save_pretrained(str(target.path))
    tokenizer.save_pretrained(str(target.path))
    shutil.rmtree(target.path / "checkpoint", ignore_errors=True)
    metrics = {
        "train_loss": sum(losses[-50:]) / max(1, len(losses[-50:])),
        "val_loss": val_loss,
        "params": float(params),
        "steps": float(step),
        "train_seconds": train_seconds,
        "tokens_per_s": loop_tokens / max(1e-9, time.perf_counter() - loop_started),
        "tokens": float(tokens_seen),
        "train_pairs": float(len(train_pairs)),
        "val_pairs": float(len(val_pairs)),
    }
    manifest = {
        "kind": "il-sft",
        "parent": parent,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": asdict(config),
        "data": data,
        "metrics": metrics,
    }
    if not publish:
        return SFTResult(target, metrics, manifest, published=False)
    return SFTResult(registry.publish(target, manifest), metrics, manifest)


def _save_checkpoint(
    ref: ModelRef,
    model: Any,
    optimizer: Any,
    step: int,
    tokens: int,
    losses: list[float],
    parent: str,
) -> None:
    """Weights as a model folder, the rest in state.pt; written aside, then swapped in."""
    folder = ref.path / "checkpoint"
    model.save_pretrained(str(folder))
    state = {
        "optimizer": optimizer.state_dict(), "step": step, "tokens": tokens,
        "losses": losses, "rng": torch.get_rng_state(), "parent": parent,
    }  # fmt: skip
    torch.save(state, folder / "state.pt.tmp")
    (folder / "state.pt.tmp").replace(folder / "state.pt")


def _load_checkpoint(ref: ModelRef, config: SFTConfig) -> tuple[Any, Any, str]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = ref.path / "checkpoint"
    if not (folder / "state.pt").is_file():
        raise TrainingError(f"{ref.tag} has no checkpoint to resume (at {folder})")
    if config.lora:
        raise TrainingError("resuming a LoRA run is not supported; start it again")
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    return model, tokenizer, ""  # the parent is in state.pt
