"""IL-GRPO's rollouts: G sampled completions per prompt, and which query slot each token writes.

On-policy: sampled from the model being trained, in-process, with transformers' ``generate``
(temperature and top-k as configured; the paper's 1.0 and 100). A :class:`Batch` keeps what
the update needs: the full sequences (prompt left-padded, then completion), the completion's
mask up to and including its end-of-sequence token, the decoded texts (copy tokens kept: the
reward expands them) and each completion token's slot (:func:`training.grpo_math.token_slots`).
For AIGQ-Think prompts each token's query slot and trigger slot instead
(:func:`training.grpo_math.think_token_slots`, -1 for none); one batch is all Direct or all
Think, since the two read their tokens' slots differently.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from training import TrainingError
from training.grpo_data import GrpoPrompt
from training.grpo_math import think_token_slots, token_slots


@dataclass
class Batch:
    """One step's rollouts: ``P * G`` rows, prompt ``i`` owning rows ``i*G .. i*G+G-1``."""

    ids: Tensor  # [N, W + T] prompt (left-padded) then completion
    mask: Tensor  # [N, W + T] attention mask
    completion: Tensor  # [N, T] completion token ids
    completion_mask: Tensor  # [N, T] 1 up to and including the end-of-sequence token
    texts: list[str]
    slots: Tensor  # [N, T] the (query) slot each completion token writes; Think: -1 for none
    trigger_slots: Tensor | None = None  # [N, T] Think: the trigger slot, -1 for none


def encode_prompts(tokenizer: Any, prompts: Sequence[str], max_tokens: int) -> list[list[int]]:
    """Token ids of each prompt, the newest ``max_tokens`` kept (as IL-SFT's ``encode``)."""
    ids = tokenizer(list(prompts), add_special_tokens=False).input_ids
    return [row[-max_tokens:] for row in ids]


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """``(ids, mask)``, rows right-aligned."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
        mask[i, width - len(row) :] = 1
    return ids, mask


def completion_mask(completion: Tensor, eos_id: int) -> Tensor:
    """1 for each token up to and including the first end-of-sequence token of its row."""
    is_eos = (completion == eos_id).long()
    before = is_eos.cumsum(dim=1) - is_eos  # end-of-sequence tokens strictly before
    return (before == 0).long()


class Pieces:
    """Each token's text, decoded once per id (what :func:`token_slots` reads)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.cache: dict[int, str] = {}

    def __call__(self, ids: Sequence[int]) -> list[str]:
        for i in ids:
            if i not in self.cache:
                self.cache[i] = self.tokenizer.decode([i], skip_special_tokens=False)
        return [self.cache[i] for i in ids]


@dataclass(frozen=True)
class Sampling:
    """How rollouts are sampled (:class:`training.grpo.GRPOConfig` fills it)."""

    group: int
    temperature: float
    top_k: int
    max_new_tokens: int
    max_prompt_tokens: int


@torch.no_grad()
def rollout(
    model: Any, tokenizer: Any, prompts: Sequence[GrpoPrompt], sampling: Sampling, pieces: Pieces
) -> Batch:
    """``sampling.group`` sampled completions per prompt from the current model; prompt
    ``i`` owns rows ``i*G .. i*G+G-1``."""
    s = sampling
    kinds = {p.is_think for p in prompts}
    if len(kinds) > 1:
        raise TrainingError("a rollout batch mixes Direct and Think prompts")
    think = kinds == {True}
    pad_id, eos_id = int(tokenizer.pad_token_id), int(tokenizer.eos_token_id)
    rows = encode_prompts(tokenizer, [p.prompt for p in prompts], s.max_prompt_tokens)
    ids, mask = left_pad(rows, pad_id)
    model.eval()
    out = model.generate(
        input_ids=ids, attention_mask=mask, do_sample=True, temperature=s.temperature,
        top_k=s.top_k or None, top_p=1.0, max_new_tokens=s.max_new_tokens,
        num_return_sequences=s.group, pad_token_id=pad_id, eos_token_id=eos_id,
    )  # fmt: skip
    width = ids.shape[1]
    completion = out[:, width:]
    cmask = completion_mask(completion, eos_id)
    full_mask = torch.cat([mask.repeat_interleave(s.group, dim=0), cmask], dim=1)
    texts: list[str] = []
    slots = torch.full_like(completion, -1) if think else torch.zeros_like(completion)
    triggers = torch.full_like(completion, -1) if think else None
    for n in range(completion.shape[0]):
        kept = completion[n][cmask[n].bool()].tolist()
        ended = bool(kept) and kept[-1] == eos_id
        texts.append(tokenizer.decode(kept[:-1] if ended else kept, skip_special_tokens=False))
        if triggers is None:
            row = token_slots(pieces(kept), ended=ended)
        else:
            trigger_row, row = think_token_slots(pieces(kept), ended=ended)
            triggers[n, : len(row)] = torch.tensor(trigger_row, dtype=torch.long)
        slots[n, : len(row)] = torch.tensor(row, dtype=torch.long)
    return Batch(out, full_mask, completion, cmask, texts, slots, triggers)
