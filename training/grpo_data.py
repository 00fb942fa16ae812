"""What IL-GRPO and its plain-GRPO baseline learn from: prompts with their reference lists,
and the CTR reward's view of each user. Pure, but for the CTR model's scoring.

A :class:`GrpoPrompt` is one IL-SFT sample (:mod:`training.samples`) seen by RL: the
generator's prompt, the history queries its copy tokens stand for, the reference list (the
sample's target, copy tokens expanded: what position-wise matching compares slot by slot), and
the user's state as the CTR model reads it (:class:`~training.ctr_data.UserContext`, plus how
often and when the user searched each of their history queries), so that ``p_ctr(q | u)`` of
a generated query is the same number the feedback loop's CTR model gives a served one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aigq.events import ShownQuery
from generators.output import parse_queries
from generators.prompt import history_queries
from training import TargetOrder
from training.ctr_data import HISTORY_N, RECENT_N, CtrExample, UserContext
from training.samples import Context, Sample, query_key

CtrScorer = Callable[[Sequence[CtrExample]], list[float]]
"""p(click) of each row: :meth:`training.ctr_model.CtrModel.score`."""


@dataclass(frozen=True)
class GrpoPrompt:
    """One prompt of RL training (module doc)."""

    prompt: str
    shown: tuple[str, ...]
    references: tuple[str, ...]
    user: UserContext
    searched: tuple[tuple[str, int, int | None], ...]
    """``(query key, times searched, last searched ms or None)`` per query the user searched"""


def user_context(context: Context) -> UserContext:
    """The CTR model's view of a sample's context: the last :data:`RECENT_N` behaviours'
    texts, the last search, how many searches, the strongest history queries."""
    recent = tuple(text for _, _, text, _ in context.recent[-RECENT_N:])
    last = context.searches[-1] if context.searches else ""
    history = tuple(query_key(q) for q in context.history[:HISTORY_N])
    return UserContext(
        context.user_id, context.now_ms, recent, last, len(context.searches), history
    )


def searched_stats(context: Context) -> tuple[tuple[str, int, int | None], ...]:
    """How often and when the user searched each query before the cut: the history queries'
    exact counts and times from the worker's fold; other past searches counted over the
    context's kept searches, with no time (the CTR feature reads that as "long ago")."""
    out: dict[str, tuple[int, int | None]] = {}
    for query in context.searches:
        key = query_key(query)
        times, _ = out.get(key, (0, None))
        out[key] = (times + 1, None)
    for query, times, last in context.searched:
        out[query_key(query)] = (times, last)
    return tuple((key, times, last) for key, (times, last) in out.items())


def grpo_prompt(sample: Sample, k: int = 10, order: TargetOrder = "shown") -> GrpoPrompt:
    """A sample as an RL prompt (its reference list is its IL-SFT target, expanded)."""
    shown = tuple(history_queries(sample.context.history))
    references = tuple(parse_queries(sample.target(k, order), k=k, shown=shown))
    return GrpoPrompt(
        prompt=sample.prompt(k),
        shown=shown,
        references=references,
        user=user_context(sample.context),
        searched=searched_stats(sample.context),
    )


def ctr_rows(prompt: GrpoPrompt, queries: Sequence[str | None]) -> list[CtrExample]:
    """One CTR row per slot holding a query (slot ``j`` is shown at position ``j``, as a u2q
    hint), in slot order."""
    stats = {key: (times, last) for key, times, last in prompt.searched}
    rows = []
    for position, query in enumerate(queries):
        if query is None:
            continue
        times, last = stats.get(query_key(query), (0, None))
        shown = ShownQuery(query=query, position=position, source="u2q")
        rows.append(CtrExample(prompt.user, shown.query, shown.position, shown.source, 0,
                               times, last))  # fmt: skip
    return rows


def slot_ctr(
    rollouts: Sequence[tuple[GrpoPrompt, Sequence[str | None]]], scorer: CtrScorer | None
) -> list[list[float]]:
    """``p_ctr`` of each slot's query of each ``(prompt, slot queries)`` rollout (0 where a
    slot has no query, or without a scorer): one batch for the CTR model."""
    if scorer is None:
        return [[0.0] * len(queries) for _, queries in rollouts]
    rows = [row for prompt, queries in rollouts for row in ctr_rows(prompt, queries)]
    scores = iter(scorer(rows))
    return [[0.0 if q is None else next(scores) for q in queries] for _, queries in rollouts]
