"""IL-GRPO's rewards (paper, "IL-GRPO"): per query slot, and per list. Pure functions.

A rollout is the model's text for one prompt. Its line ``j`` is its ``j``-th query
(:func:`generators.output.line_verdicts`: the generator's own validation, copy tokens
expanded), and it is matched **position-wise** with the reference list's query ``j``:

- the **query reward** of slot ``j`` is ``w_ctr * clip(gamma * p_ctr, 0, beta) + w_rouge *
  ROUGE-L(query_j, reference_j) + w_length * length(query_j)``, where ``p_ctr`` is the CTR
  model's probability that this user clicks that query shown at that position
  (:mod:`training.ctr_model`); a slot whose line is missing, empty, malformed, unsafe or a
  near-duplicate of an earlier line scores 0 (the repetition is also penalised per list);
- the **sequence reward** of the whole list is ``w_format * format + w_repetition *
  repetition``: ``format`` is the share of its lines that are well-formed queries (a line
  past the ``k``-th is not: the list is too long; no line at all scores 0), ``repetition``
  is minus the share of lines that near-duplicate an earlier one.

:func:`score_rollout` gives both, plus the two scalars the rest of training reads: ``total``
(the sum of the slot rewards and the sequence reward: the one number plain GRPO gets) and
``score`` (the mean slot reward over its maximum, in 0..1: what the difficulty filter reads).

AIGQ-Think's rollouts also write trigger sets: :func:`trigger_rewards` scores each trigger
slot by the ROUGE-L of its indices against the reference's (:func:`index_rouge_l`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from generators.output import Verdict, line_verdicts
from generators.think import parse_think
from streams.simulator import rouge_l
from training import TrainingError


@dataclass(frozen=True)
class RewardConfig:
    """The reward's weights and shapes (paper: R_query = sum_m w_m r_m; R_seq = format +
    repetition)."""

    k: int = 10
    """slots per list (the prompt asks for this many queries)"""
    w_ctr: float = 1.0
    """weight of the CTR reward clip(gamma * p_ctr, 0, beta)"""
    gamma: float = 10.0
    """scale of p_ctr: on AOL's simulated feedback the CTR model gives a user's history
    queries 0.04 on average (at most ~0.4) and a query they never searched ~0, so 10 * p
    spans the reward's range and the cap ``beta`` binds only on the likeliest"""
    beta: float = 1.0
    """cap of the scaled CTR reward"""
    w_rouge: float = 1.0
    """weight of word ROUGE-L F1 against the reference query at the same slot"""
    w_length: float = 0.2
    """weight of the length reward (1 up to ``ideal_words`` words, 0 at ``max_words``)"""
    ideal_words: int = 6
    max_words: int = 10
    """a query of more words is malformed (the generator's validation drops it)"""
    w_format: float = 1.0
    w_repetition: float = 1.0
    near_duplicate: float = 0.8
    """word Jaccard at or above which a line near-duplicates an earlier one (the generator's)"""

    def __post_init__(self) -> None:
        if self.k < 1:
            raise TrainingError(f"k must be >= 1, got {self.k}")
        if min(self.w_ctr, self.gamma, self.beta, self.w_rouge, self.w_length) < 0:
            raise TrainingError("reward weights, gamma and beta must be >= 0")
        if not 1 <= self.ideal_words < self.max_words:
            raise TrainingError("need 1 <= ideal_words < max_words")
        if self.query_max <= 0:
            raise TrainingError("at least one query reward weight must be > 0")

    @property
    def query_max(self) -> float:
        """The most one slot can score."""
        return self.w_ctr * self.beta + self.w_rouge + self.w_length


@dataclass(frozen=True)
class Rollout:
    """One rollout's rewards: ``query[j]`` for slot ``j`` (``k`` of them), the sequence's."""

    query: tuple[float, ...]
    sequence: float
    queries: tuple[str | None, ...] = field(default=())
    """the query each slot was judged as (None: no valid query there)"""
    trigger: tuple[float, ...] | None = None
    """an AIGQ-Think rollout's trigger rewards, one per trigger slot of its reference
    (:func:`trigger_rewards`); None for a Direct rollout, which writes no trigger"""

    @property
    def total(self) -> float:
        """Plain GRPO's one scalar: every reward summed, the slot rewards, the sequence reward
        and a Think rollout's trigger rewards (so plain GRPO, the baseline, is paid for
        everything IL-GRPO is, only as one number)."""
        return sum(self.query) + self.sequence + sum(self.trigger or ())

    def score(self, config: RewardConfig) -> float:
        """The mean slot reward over its maximum, in 0..1 (the difficulty filter's reward).

        A Think rollout's trigger rewards are left out on purpose: the score judges the query
        list, what u2q serves, on the same 0..1 scale for Direct and Think runs (the filter's
        bounds, the curve's ``score`` and ``aigq train grpo-score`` stay comparable); the
        triggers are a means to x2q's map, and their own curve is ``trigger_reward``."""
        return sum(self.query) / (len(self.query) * config.query_max)


def ctr_reward(p_ctr: float, gamma: float, beta: float) -> float:
    """clip(gamma * p_ctr, 0, beta)."""
    return min(max(gamma * p_ctr, 0.0), beta)


def length_reward(query: str, ideal_words: int, max_words: int) -> float:
    """1 for 1..``ideal_words`` words, falling linearly to 0 at ``max_words``; 0 when empty."""
    n = len(query.split())
    if n == 0 or n >= max_words:
        return 0.0
    if n <= ideal_words:
        return 1.0
    return (max_words - n) / (max_words - ideal_words)


def slot_queries(
    text: str, shown: Sequence[str], config: RewardConfig
) -> tuple[list[str | None], list[Verdict]]:
    """The query of each of the ``k`` slots (None where the line is missing or not kept by
    the generator's validation), and every line's verdict (for the sequence reward)."""
    judged = line_verdicts(
        text.rstrip("\n"), max_words=config.max_words, near_duplicate=config.near_duplicate,
        shown=shown,
    )  # fmt: skip
    verdicts = [v for _, v in judged]
    if verdicts == ["empty"]:  # no text at all: no line
        verdicts = []
    queries: list[str | None] = [q if v == "kept" else None for q, v in judged[: config.k]]
    queries += [None] * (config.k - len(queries))
    return queries, verdicts


def format_reward(verdicts: Sequence[Verdict], k: int) -> float:
    """The share of lines that are well-formed queries (kept or a duplicate: a repeat is the
    repetition penalty's business); lines past the ``k``-th are not. 0 without a line."""
    if not verdicts:
        return 0.0
    good = sum(v in ("kept", "duplicate") for v in verdicts[:k])
    return good / len(verdicts)


def repetition_penalty(verdicts: Sequence[Verdict]) -> float:
    """Minus the share of lines that near-duplicate an earlier line (0 without a line)."""
    if not verdicts:
        return 0.0
    return -sum(v == "duplicate" for v in verdicts) / len(verdicts)


def query_reward(
    query: str | None, reference: str | None, p_ctr: float, config: RewardConfig
) -> float:
    """One slot's reward (module doc); 0 for no query."""
    if query is None:
        return 0.0
    rouge = rouge_l(query, reference) if reference else 0.0
    return (
        config.w_ctr * ctr_reward(p_ctr, config.gamma, config.beta)
        + config.w_rouge * rouge
        + config.w_length * length_reward(query, config.ideal_words, config.max_words)
    )


def score_rollout(
    queries: Sequence[str | None],
    verdicts: Sequence[Verdict],
    references: Sequence[str],
    p_ctr: Sequence[float],
    config: RewardConfig,
) -> Rollout:
    """The rewards of one rollout from its slots (:func:`slot_queries`), the reference list
    and each slot's ``p_ctr`` (any value where the slot has no query)."""
    if len(queries) != config.k or len(p_ctr) != config.k:
        raise TrainingError(f"need {config.k} slots and CTR values")
    refs = [*references[: config.k], *[None] * (config.k - len(references))]
    query = tuple(
        query_reward(q, r, p, config) for q, r, p in zip(queries, refs, p_ctr, strict=True)
    )
    sequence = config.w_format * format_reward(
        verdicts, config.k
    ) + config.w_repetition * repetition_penalty(verdicts)
    return Rollout(query, sequence, tuple(queries))


def index_rouge_l(generated: Sequence[int], reference: Sequence[int]) -> float:
    """ROUGE-L F-measure of two index sequences (``<2><5>`` vs ``<2><3>``: ``(2, 5)`` vs
    ``(2, 3)``, LCS 1, ``2 * 1 / (2 + 2) = 0.5``); 0 when either is empty."""
    if not generated or not reference:
        return 0.0
    previous = [0] * (len(reference) + 1)
    for a in generated:
        current = [0]
        for j, b in enumerate(reference):
            current.append(previous[j] + 1 if a == b else max(previous[j + 1], current[j]))
        previous = current
    return 2.0 * previous[-1] / (len(generated) + len(reference))


def trigger_rewards(
    text: str,
    reference: str,
    n_behaviours: int,
    shown: Sequence[str] = (),
    slots: int | None = None,
) -> list[float]:
    """AIGQ-Think's trigger rewards (paper, "IL-GRPO", Think): slot ``j`` is the ``j``-th
    trigger line, and its reward is :func:`index_rouge_l` of the rollout's trigger set there
    and the reference target's ``j``-th. Both texts are read with
    :func:`generators.think.parse_think` (``n_behaviours``: the prompt's behaviours;
    ``shown``: its history queries), so a pair the parser drops (an index out of range, no
    valid query) scores 0 at its slot without shifting the slots after it, and so does a slot
    the rollout never wrote. ``slots`` (default: the reference's pair count) is the length of
    the list, the same for every rollout of a prompt: a group's slot ``j`` is comparable.
    """
    ref = parse_think(reference, n_behaviours, shown=shown).pairs
    if slots is None:
        slots = len(ref)
    if slots < 0:
        raise TrainingError(f"slots must be >= 0, got {slots}")
    got = parse_think(text, n_behaviours, shown=shown)
    written = dict(zip(got.slots, got.pairs, strict=True))
    return [
        index_rouge_l(written[j].triggers, ref[j].triggers)
        if j in written and j < len(ref)
        else 0.0
        for j in range(slots)
    ]
