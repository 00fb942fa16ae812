"""Metrics of the last-day protocol (:mod:`training.lastday`): pure functions.

Predictions are compared to labels by :func:`training.samples.query_key` (the one normal
form: the model's text cleaning, then :func:`cache.text.normalize`). For a prediction list
``P`` (most likely first) of one user with test-day labels ``L``:

- ``hit@K`` (any-hit): 1 when any of ``P[:K]`` is in ``L``; averaged over users.
- ``recall@K``: distinct labels found in ``P[:K]`` divided by ``|L|``; averaged over users.
- ``novel_hit@K``: like ``hit@K`` against the labels the user never searched before the test
  day; averaged over the users that have at least one such label (``novel_users``).
- ``real_words``: of all words (whitespace-separated, normalised) of every ``P[:K]``, the share
  found in the vocabulary of the training users' queries (:func:`vocabulary`). Pooled over
  the words of all users, so a long list weighs more; 0 when no word was generated.
- ``distinct@K``: distinct normalised queries in ``P[:K]``; averaged over users.
- ``empty``: the share of users whose list is empty.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

from aigq.events import SearchEvent
from training import TrainingError
from training.lastday import DaySample
from training.samples import AnyEvent, query_key

DAY_KS: tuple[int, ...] = (1, 3, 10, 30)
"""the any-hit cut-offs the protocol reports"""


def vocabulary(events: Iterable[AnyEvent]) -> frozenset[str]:
    """The words of every search query among ``events`` (give it the training users' only)."""
    words: set[str] = set()
    for event in events:
        if isinstance(event, SearchEvent):
            words.update(query_key(event.query).split())
    return frozenset(words)


def any_hit(predictions: Sequence[str], labels: Iterable[str], k: int) -> float:
    """1.0 when one of the top ``k`` predictions is one of ``labels``, else 0.0."""
    wanted = {query_key(q) for q in labels} - {""}
    return 1.0 if any(query_key(p) in wanted for p in predictions[:k]) else 0.0


def recall(predictions: Sequence[str], labels: Iterable[str], k: int) -> float:
    """Distinct labels among the top ``k`` over all labels; 0.0 without labels."""
    wanted = {query_key(q) for q in labels} - {""}
    if not wanted:
        return 0.0
    found = {query_key(p) for p in predictions[:k]} & wanted
    return len(found) / len(wanted)


def real_words(predictions: Sequence[str], vocab: frozenset[str], k: int) -> tuple[int, int]:
    """(words of the top ``k`` found in ``vocab``, all words of the top ``k``)."""
    words = [w for p in predictions[:k] for w in query_key(p).split()]
    return sum(w in vocab for w in words), len(words)


def day_metrics(
    samples: Sequence[DaySample],
    predictions: Sequence[Sequence[str]],
    vocab: frozenset[str],
    ks: Sequence[int] = DAY_KS,
    k: int = 10,
) -> dict[str, float]:
    """The module docstring's figures, ``hit@K`` for each of ``ks`` and the rest at ``k``;
    ``users`` and ``novel_users`` are counts."""
    if len(samples) != len(predictions):
        raise TrainingError(f"{len(samples)} samples but {len(predictions)} prediction lists")
    if min(ks, default=0) < 1 or k < 1:
        raise TrainingError(f"cut-offs must be >= 1, got {ks} and {k}")
    sums: defaultdict[str, float] = defaultdict(float)
    novel_users = known = words = 0
    for sample, predicted in zip(samples, predictions, strict=True):
        for cut in ks:
            sums[f"hit@{cut}"] += any_hit(predicted, sample.labels, cut)
        sums[f"recall@{k}"] += recall(predicted, sample.labels, k)
        novel = sample.novel
        if novel:
            novel_users += 1
            sums[f"novel_hit@{k}"] += any_hit(predicted, novel, k)
        found, total = real_words(predicted, vocab, k)
        known, words = known + found, words + total
        sums[f"distinct@{k}"] += len({query_key(p) for p in predicted[:k]} - {""})
        sums["empty"] += not predicted
    n = len(samples)
    out = {"users": float(n), "novel_users": float(novel_users)}
    for name, total_ in sorted(sums.items()):
        count = novel_users if name.startswith("novel_hit@") else n
        out[name] = total_ / count if count else 0.0
    out[f"novel_hit@{k}"] = out.get(f"novel_hit@{k}", 0.0)
    out["real_words"] = known / words if words else 0.0
    return out


def hit_curve(
    samples: Sequence[DaySample], predictions: Sequence[Sequence[str]], max_k: int, novel: bool
) -> list[float]:
    """``hit@K`` (or ``novel_hit@K``) for K = 1..max_k."""
    curve = [0.0] * max_k
    count = 0
    for sample, predicted in zip(samples, predictions, strict=True):
        labels = sample.novel if novel else sample.labels
        if not labels:
            continue
        count += 1
        keys = [query_key(p) for p in predicted[:max_k]]
        wanted = set(labels)
        first = next((i for i, key in enumerate(keys) if key in wanted), None)
        if first is not None:
            for i in range(first, max_k):
                curve[i] += 1.0
    return [c / count if count else 0.0 for c in curve]
