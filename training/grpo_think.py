"""IL-GRPO on AIGQ-Think (paper, "IL-GRPO", Think): what a Think rollout is rewarded for, and
the advantage its trigger tokens get. Pure, but for the tensors.

A Think rollout is a rationale, then (trigger line -> query lines) pairs
(:mod:`generators.think`). Its lines are told apart by one rule,
:func:`training.grpo_math.think_line_slots`, for the rewards and for the tokens alike:

- **query slots**: the ``j``-th query line (a non-blank line after a trigger line) is query
  slot ``j``. :func:`query_lines` keeps those lines only, and the Direct reward reads them
  (:func:`training.grpo_rewards.slot_queries`, :func:`~training.grpo_rewards.score_rollout`):
  slot ``j`` against the reference's ``j``-th query (its queries flattened in pair order,
  :func:`training.grpo_data.think_grpo_prompt`), the sequence reward over the query lines; its
  tokens get the composite advantage, exactly as a Direct rollout's;
- **trigger slots**: the ``j``-th trigger line is trigger slot ``j``, rewarded by the
  ROUGE-L of its indices against the reference's ``j``-th trigger set
  (:func:`~training.grpo_rewards.trigger_rewards`, as many slots as the reference has pairs);
  :func:`trigger_rows` normalises each over the group at that slot. A trigger line the
  reference has no slot for is rewarded by nothing: its tokens get the sequence part alone,
  like a query line past the ``k``-th, whichever other prompts share the batch;
- the rationale, blank lines and lines before the first trigger line are in no slot: the
  sequence part alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch
from torch import Tensor

from training import TrainingError
from training.grpo_data import GrpoPrompt
from training.grpo_math import think_line_slots, trigger_advantages
from training.grpo_rewards import Rollout, trigger_rewards


def query_lines(text: str) -> str:
    """The query lines of a Think rollout's text, in order, one per line: what its query
    slots are scored on (the module doc; trigger lines, the rationale and blank lines out)."""
    lines = text.split("\n")
    _, query_of = think_line_slots(lines)
    return "\n".join(line for line, slot in zip(lines, query_of, strict=True) if slot >= 0)


def with_triggers(rollout: Rollout, text: str, prompt: GrpoPrompt) -> Rollout:
    """``rollout`` (its query rewards, from :func:`query_lines` of ``text``) with the trigger
    rewards of ``text`` against ``prompt``'s reference Think target."""
    got = trigger_rewards(text, prompt.think_reference, prompt.behaviours, prompt.shown)
    return replace(rollout, trigger=tuple(got))


def trigger_tensor(rollouts: Sequence[Rollout], group: int) -> tuple[Tensor, Tensor]:
    """The trigger rewards of a Think batch as ``[P, G, K_t]``, zero-padded to its widest
    prompt, and each prompt's own number of trigger slots ``[P]`` (row ``n`` is prompt
    ``n // group``'s; every rollout of a prompt has that prompt's number of slots)."""
    if group < 1 or len(rollouts) % group:
        raise TrainingError(f"{len(rollouts)} rollouts do not make groups of {group}")
    widths = [len(r.trigger or ()) for r in rollouts]
    own = widths[::group]
    if any(w != own[n // group] for n, w in enumerate(widths)):
        raise TrainingError("the rollouts of one prompt have different trigger slot counts")
    width = max(widths, default=0)
    out = torch.zeros((len(rollouts), width))
    for n, r in enumerate(rollouts):
        out[n, : widths[n]] = torch.tensor(r.trigger or (), dtype=out.dtype)
    return out.view(len(own), group, width), torch.tensor(own, dtype=torch.long)


def trigger_rows(
    rollouts: Sequence[Rollout],
    rest: Tensor,
    eps: float = 1e-4,
    reward_clip: float = 10.0,
    adv_clip: float = 2.0,
) -> Tensor:
    """Each rollout's trigger advantages ``[N, K_t]``, in row order: every trigger slot's
    reward normalised over the group at that slot
    (:func:`~training.grpo_math.trigger_advantages`); a padded slot (past its prompt's own
    trigger slots) gets ``rest[n]``, the sequence part, as a trigger line past the batch's
    widest does in :func:`~training.grpo_math.think_token_advantages` (``rest``: ``[P, G]``,
    from :func:`~training.grpo_math.advantages`)."""
    rewards, widths = trigger_tensor(rollouts, rest.shape[1])
    if rewards.shape[-1] == 0:  # no prompt of the batch has a trigger slot
        return rewards.reshape(len(rollouts), 0)
    adv = trigger_advantages(rewards, eps, reward_clip, adv_clip)
    inside = torch.arange(adv.shape[-1]) < widths.view(-1, 1, 1)
    adv = torch.where(inside, adv, rest.unsqueeze(-1).expand_as(adv))
    return adv.reshape(len(rollouts), adv.shape[-1])


def mean_trigger_reward(rollouts: Sequence[Rollout]) -> float | None:
    """The mean over the Think rollouts of their mean trigger reward (0 for a rollout whose
    reference has no pair); None when no rollout is a Think one (a Direct batch)."""
    think = [r.trigger for r in rollouts if r.trigger is not None]
    if not think:
        return None
    return sum(sum(t) / len(t) if t else 0.0 for t in think) / len(think)
