"""What IL-GRPO and its plain-GRPO baseline learn from: prompts with their reference lists,
and the CTR reward's view of each user. Pure, but for the CTR model's scoring.

A :class:`GrpoPrompt` is one IL-SFT sample (:mod:`training.samples`) seen by RL: the
generator's prompt, the history queries its copy tokens stand for, the reference list (the
sample's target, copy tokens expanded: what position-wise matching compares slot by slot), and
the user's state as the CTR model reads it (:class:`~training.ctr_data.UserContext`, plus how
often and when the user searched each of their history queries), so that ``p_ctr(q | u)`` of
a generated query is the same number the feedback loop's CTR model gives a served one.
An AIGQ-Think prompt (:func:`think_grpo_prompt`) also carries its reference Think target,
whose trigger sets the rollouts' are scored against (:mod:`training.grpo_think`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aigq.events import ShownQuery
from generators.output import parse_queries
from generators.prompt import history_queries
from generators.think import parse_think, render_think, think_prompt_for
from training import TargetOrder
from training.ctr_data import HISTORY_N, RECENT_N, CtrExample, UserContext
from training.samples import Context, Sample, query_key
from training.think import question, shown_behaviours

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
    think_reference: str = ""
    """AIGQ-Think: the reference Think target (:func:`think_grpo_prompt`) whose trigger sets
    the rollouts' are scored against; empty for a Direct prompt"""
    behaviours: int = 0
    """AIGQ-Think: how many behaviours the prompt shows (a trigger index past it is invalid)"""

    @property
    def is_think(self) -> bool:
        """Whether rollouts of this prompt are Think outputs (rationale, then pairs)."""
        return bool(self.think_reference)


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


REFERENCE_RATIONALE = "the reference"
"""The rationale line of a reference Think target: never rewarded (only its pairs are read),
so any words do; the teacher's are not needed to build RL prompts."""


def think_grpo_prompt(sample: Sample, k: int = 10) -> GrpoPrompt:
    """A Think sample (:func:`training.samples.think_samples`) as an RL prompt.

    Its reference is IL-SFT's Think target with a stand-in rationale: the same labels and
    trigger sets (:func:`training.think.question`, :func:`~training.think.align`), rendered by
    :func:`~generators.think.render_think`. ``references`` are that target's queries in pair
    order, one per query line, so query slot ``j`` (the ``j``-th query line, as
    :func:`training.grpo_math.think_token_slots` numbers them) meets reference query ``j``. A
    sample that makes no pair gets no reference queries (the CLI counts and drops it).
    """
    shown = tuple(history_queries(sample.context.history))
    asked = question(sample, k)
    reference = render_think(REFERENCE_RATIONALE, asked.pairs if asked else [], shown, k)
    behaviours = len(shown_behaviours(sample.context))
    pairs = parse_think(reference, behaviours, k, shown=shown).pairs
    return GrpoPrompt(
        prompt=think_prompt_for(sample.context.request(), k),
        shown=shown,
        references=tuple(q for pair in pairs for q in pair.queries),
        user=user_context(sample.context),
        searched=searched_stats(sample.context),
        think_reference=reference,
        behaviours=behaviours,
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
