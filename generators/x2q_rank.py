"""How the x2q builder orders a trigger's queries by ``S(x, q)``.

Paper §4: the queries AIGQ-Think wrote for a trigger ``x`` are ranked by
``S(x, q) = alpha * relevance(x, q) + (1 - alpha) * effectiveness(q)``. Here

- ``relevance(x, q)`` is the cosine similarity of the trigger's text and the query in
  all-MiniLM-L6-v2 space (:class:`generators.embeddings.Embeddings`), clipped to [0, 1];
- ``effectiveness(q)`` is the query's normalised popularity in the build's window
  (:meth:`generators.x2q_triggers.Popularity.effectiveness`): searches and clicked hints.

Pure given the two score lists; ties keep the model's order (its own ranking is the prior).
Near-duplicates (:func:`cache.text.normalize`) keep their first spelling, as the read path's
composition would.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from cache.text import normalize


class Scored(NamedTuple):
    query: str
    score: float
    relevance: float
    effectiveness: float


def rank(
    queries: Sequence[str],
    relevance: Sequence[float],
    effectiveness: Sequence[float],
    alpha: float,
) -> list[Scored]:
    """``queries`` (the model's order) by ``S`` descending, each normalised query once."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if not len(queries) == len(relevance) == len(effectiveness):
        raise ValueError(
            f"{len(queries)} queries, {len(relevance)} relevances, "
            f"{len(effectiveness)} effectivenesses"
        )
    seen: set[str] = set()
    scored: list[tuple[float, int, Scored]] = []
    for i, (query, rel, eff) in enumerate(zip(queries, relevance, effectiveness, strict=True)):
        key = normalize(query)
        if not key or key in seen:
            continue
        seen.add(key)
        rel = min(max(rel, 0.0), 1.0)
        score = alpha * rel + (1.0 - alpha) * eff
        scored.append((-score, i, Scored(query, score, rel, eff)))
    scored.sort()
    return [item for _, _, item in scored]
