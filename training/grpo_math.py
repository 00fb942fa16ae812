"""IL-GRPO's arithmetic (paper, "IL-GRPO"): advantages, clip masks, the filter. Pure tensors.

Shapes: ``P`` prompts, ``G`` rollouts per prompt, ``K`` query slots, ``T`` completion tokens.

- :func:`advantages`: the advantage of slot ``j`` of rollout ``i`` is its query reward
  normalised over the ``G`` rollouts **at slot j**, plus ``lam`` times the rollout's sequence
  reward normalised over its group; rewards are clipped to ``+-reward_clip`` first, the sum to
  ``+-adv_clip``. Plain GRPO would give every token one number: the group-normalised total.
- :func:`token_advantages`: every token of slot ``j`` gets slot ``j``'s advantage; a token in
  no slot (past the ``K``-th line) gets the sequence part alone.
- :func:`token_slots`: which slot each completion token writes (the newlines before it).
- :func:`clip_eps`: entropy-adaptive clipping: tokens at or above the batch's 80th entropy
  percentile (the forks where the policy hesitates) get the wider ``eps_high``.
- :func:`clipped_loss`: the PPO-style clipped surrogate, averaged over the batch's tokens.
- :func:`entropy_weight`: the entropy bonus's weight, decaying linearly to 0.
- :func:`keep_prompts`: the difficulty filter (mean reward within ``[low, high]``).
- :func:`trigger_advantages`, :func:`think_token_slots` (:func:`think_line_slots`),
  :func:`think_token_advantages`: AIGQ-Think's trigger tokens get their own per-trigger-slot
  advantage.

Standard deviations are population ones (divide by ``G``); ``eps`` keeps a group whose
rewards are all equal at advantage 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from generators.think import trigger_line


def normalise(x: Tensor, dim: int, eps: float = 1e-4) -> Tensor:
    """``(x - mean) / (std + eps)`` along ``dim`` (population standard deviation)."""
    mean = x.mean(dim=dim, keepdim=True)
    std = x.std(dim=dim, keepdim=True, unbiased=False)
    return (x - mean) / (std + eps)


def advantages(
    query_rewards: Tensor,
    sequence_rewards: Tensor,
    lam: float,
    eps: float = 1e-4,
    reward_clip: float = 10.0,
    adv_clip: float = 2.0,
) -> tuple[Tensor, Tensor]:
    """Per-slot advantages ``[P, G, K]`` and the sequence part alone ``[P, G]``.

    ``query_rewards`` is ``[P, G, K]``, ``sequence_rewards`` ``[P, G]``.
    """
    if query_rewards.dim() != 3 or sequence_rewards.shape != query_rewards.shape[:2]:
        raise ValueError("want query rewards [P, G, K] and sequence rewards [P, G]")
    q = normalise(query_rewards.clamp(-reward_clip, reward_clip), dim=1, eps=eps)
    s = lam * normalise(sequence_rewards.clamp(-reward_clip, reward_clip), dim=1, eps=eps)
    slot = (q + s.unsqueeze(-1)).clamp(-adv_clip, adv_clip)
    return slot, s.clamp(-adv_clip, adv_clip)


def sequence_advantages(totals: Tensor, eps: float = 1e-4, adv_clip: float = 2.0) -> Tensor:
    """Plain GRPO's advantage ``[P, G]``: each rollout's one total reward, group-normalised."""
    return normalise(totals, dim=1, eps=eps).clamp(-adv_clip, adv_clip)


def token_slots(pieces: Sequence[str], ended: bool = False) -> list[int]:
    """The slot of each completion token, given each token's text: the number of newlines
    written before it (the first line is slot 0; a newline belongs to the line it ends).

    With ``ended``, the last piece is the end-of-sequence token, and it belongs to the slot it
    leaves empty: the line after the last one written (slot 0 for an empty list). So stopping
    early is judged by the reward of the slot it gives up, against the rollouts that filled it.
    """
    out, lines, text_in_line = [], 0, False
    body = pieces[:-1] if ended and pieces else pieces
    for piece in body:
        out.append(lines)
        newlines = piece.count("\n")
        lines += newlines
        tail = piece.rsplit("\n", 1)[-1] if newlines else piece
        text_in_line = bool(tail.strip()) or (text_in_line and not newlines)
    if ended and pieces:
        out.append(lines + (1 if text_in_line else 0))
    return out


def token_advantages(slot_adv: Tensor, rest: Tensor, slots: Tensor) -> Tensor:
    """``[N, T]`` advantages: token ``t`` of rollout ``n`` gets ``slot_adv[n, slots[n, t]]``
    when that slot is one of the ``K``, else ``rest[n]``. ``slot_adv`` is ``[N, K]``, ``rest``
    ``[N]``, ``slots`` ``[N, T]`` (long, >= 0)."""
    k = slot_adv.shape[1]
    inside = slots < k
    picked = slot_adv.gather(1, slots.clamp(max=k - 1))
    return torch.where(inside, picked, rest.unsqueeze(1).expand_as(picked))


def token_entropy(logits: Tensor) -> Tensor:
    """The entropy (nats) of each position's next-token distribution, ``[..., V] -> [...]``."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(dim=-1)


def clip_eps(
    entropy: Tensor, mask: Tensor, eps_low: float, eps_high: float, quantile: float = 0.8
) -> Tensor:
    """Each token's clip range: ``eps_high`` where its entropy is at or above the
    ``quantile`` of the batch's (masked) token entropies, else ``eps_low``."""
    values = entropy[mask.bool()]
    if values.numel() == 0:
        return torch.full_like(entropy, eps_low)
    threshold = torch.quantile(values.float(), quantile)
    low = torch.full_like(entropy, eps_low)
    return torch.where(entropy >= threshold, torch.full_like(entropy, eps_high), low)


def clipped_loss(
    logp: Tensor, old_logp: Tensor, adv: Tensor, eps: Tensor, mask: Tensor
) -> tuple[Tensor, Tensor]:
    """The clipped surrogate ``-min(r A, clip(r, 1 - eps, 1 + eps) A)`` averaged over the
    masked tokens (``r = exp(logp - old_logp)``), and the share of tokens the clip bound."""
    ratio = torch.exp(logp - old_logp)
    unclipped = ratio * adv
    clipped = torch.maximum(torch.minimum(ratio, 1.0 + eps), 1.0 - eps) * adv
    objective = torch.minimum(unclipped, clipped)
    m = mask.to(logp.dtype)
    count = m.sum().clamp(min=1.0)
    loss = -(objective * m).sum() / count
    bound = ((clipped < unclipped).to(logp.dtype) * m).sum() / count
    return loss, bound


def entropy_weight(step: int, total: int, start: float) -> float:
    """The entropy bonus's weight at ``step`` of ``total``: ``start``, linearly down to 0."""
    if total <= 0:
        return 0.0
    return start * max(0.0, 1.0 - step / total)


def keep_prompts(scores: Tensor, low: float = 0.1, high: float = 0.95) -> Tensor:
    """The difficulty filter: ``[P]`` True where the prompt's mean rollout score (``[P, G]``,
    each in 0..1) lies within ``[low, high]``: neither hopeless nor already solved."""
    mean = scores.mean(dim=1)
    return (mean >= low) & (mean <= high)


def trigger_advantages(
    trigger_rewards: Tensor, eps: float = 1e-4, reward_clip: float = 10.0, adv_clip: float = 2.0
) -> Tensor:
    """AIGQ-Think's trigger advantages ``[P, G, K_t]``: each trigger slot's reward
    (:func:`training.grpo_rewards.trigger_rewards`, zero-padded to the batch's widest
    ``K_t``) normalised over the ``G`` rollouts **at that slot**, clipped like the query
    slots'. It is :func:`advantages` with no sequence part (``lam = 0``): the same per-slot
    normalisation, reused rather than restated."""
    zeros = trigger_rewards.new_zeros(trigger_rewards.shape[:2])
    slot, _ = advantages(trigger_rewards, zeros, 0.0, eps, reward_clip, adv_clip)
    return slot


def think_token_slots(pieces: Sequence[str], ended: bool = False) -> tuple[list[int], list[int]]:
    """For each token of a Think completion, its trigger slot and its query slot (-1: none).

    Lines are told apart as :func:`generators.think.parse_think` tells them: line 0 is the
    rationale (unless it is a trigger line), a line of index tokens is trigger slot ``j`` (the
    ``j``-th written), and a non-blank line after a trigger line is query slot ``j`` (the
    ``j``-th such line across all pairs: position-wise against the reference's queries).
    The rationale, blank lines and lines outside a pair are in no slot (the sequence part
    alone). A token belongs to the line it starts in (:func:`token_slots`). With ``ended``,
    the end-of-sequence token belongs to the query slot it leaves empty (the next one).
    """
    body = list(pieces[:-1] if ended and pieces else pieces)
    trigger_of, query_of = think_line_slots("".join(body).split("\n"))
    lines = token_slots(body)
    out_t = [trigger_of[line] for line in lines]
    out_q = [query_of[line] for line in lines]
    if ended and pieces:
        out_t.append(-1)
        out_q.append(sum(q >= 0 for q in query_of))
    return out_t, out_q


def think_line_slots(lines: Sequence[str]) -> tuple[list[int], list[int]]:
    """Each line's trigger slot and query slot (-1: none), as :func:`think_token_slots` tells
    them: one rule for the tokens' advantages and for the lines the query reward reads
    (:func:`training.grpo_think.query_lines`), so query slot ``j`` is rewarded on the very
    line whose tokens carry its advantage."""
    trigger_of: list[int] = []
    query_of: list[int] = []
    triggers = queries = 0
    for number, line in enumerate(lines):
        trigger, query = -1, -1
        if trigger_line(line) is not None:
            trigger, triggers = triggers, triggers + 1
        elif number > 0 and triggers and line.strip():
            query, queries = queries, queries + 1
        trigger_of.append(trigger)
        query_of.append(query)
    return trigger_of, query_of


def think_token_advantages(
    trigger_adv: Tensor, slot_adv: Tensor, rest: Tensor, trigger_slots: Tensor, query_slots: Tensor
) -> Tensor:
    """``[N, T]`` advantages of Think completions: a token of trigger slot ``j`` (``< K_t``)
    gets ``trigger_adv[n, j]``, a token of query slot ``j`` (``< K``) ``slot_adv[n, j]``,
    any other ``rest[n]`` (:func:`token_advantages` for the query part). ``trigger_adv`` is
    ``[N, K_t]``, ``slot_adv`` ``[N, K]``, ``rest`` ``[N]``, the slots ``[N, T]`` (long, -1 for
    none; :func:`think_token_slots`)."""
    k, k_t = slot_adv.shape[1], trigger_adv.shape[1]
    query = token_advantages(slot_adv, rest, torch.where(query_slots < 0, k, query_slots))
    inside = (trigger_slots >= 0) & (trigger_slots < k_t)
    if k_t == 0:
        return query
    picked = trigger_adv.gather(1, trigger_slots.clamp(min=0, max=k_t - 1))
    return torch.where(inside, picked, query)
