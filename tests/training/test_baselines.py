"""Baselines: most popular, the user's own frequent searches, co-occurrence with back-off."""

from __future__ import annotations

import pytest

from training import TrainingError
from training.baselines import (
    Baseline,
    CoOccurrence,
    CoOccurrenceConfig,
    MostPopular,
    UserFrequent,
)
from training.samples import Context, Sample

T0 = 1_767_225_600_000


def _context(*searches: str) -> Context:
    return Context("u", T0, (), (), tuple(searches), 1, "", T0 - 1)


def _sample(searches: tuple[str, ...], labels: tuple[str, ...]) -> Sample:
    return Sample("proxy", _context(*searches), labels, labels[0] if labels else None)


def test_most_popular_counts_samples_per_query() -> None:
    train = [
        _sample((), ("weather", "Google")),
        _sample((), ("google", "news")),
        _sample((), ("news", "maps")),
        _sample((), ("google",)),
    ]
    model = MostPopular().fit(train)
    assert model.predict(_context("anything"), 3) == ["Google", "news", "weather"]
    assert model.predict(_context(), 10) == ["Google", "news", "weather", "maps"]
    with pytest.raises(TrainingError):
        model.predict(_context(), 0)


def test_user_frequent_ranks_the_users_own_searches_by_count_then_recency() -> None:
    context = _context("ebay", "weather", "Ebay", "maps", "news", "weather", "maps")
    model = UserFrequent().fit([])
    # ebay, weather and maps twice each: the most recent first; then news
    assert model.predict(context, 10) == ["maps", "weather", "Ebay", "news"]
    assert model.predict(context, 1) == ["maps"]
    assert model.predict(_context(), 5) == []


def test_co_occurrence_scores_from_the_last_searches_and_backs_off_to_popularity() -> None:
    train = [
        _sample(("news", "flights"), ("hotels", "car rental")),
        _sample(("flights",), ("hotels",)),
        _sample(("maps", "flights"), ("visa",)),
        _sample(("cake",), ("frosting",)),
        _sample(("weather",), ("google",)),
        _sample(("news",), ("google",)),
    ]
    model = CoOccurrence().fit(train)
    # flights -> hotels 2 of 3, car rental 1/3, visa 1/3; then popularity fills
    # (ties by popularity, then alphabetically)
    assert model.predict(_context("Flights"), 4) == ["hotels", "car rental", "visa", "google"]
    # "cake", one step back, adds frosting at half weight (1 * 0.5) after hotels (2/3)
    assert model.predict(_context("cake", "flights"), 10)[:2] == ["hotels", "frosting"]
    # popularity: google and hotels in two samples each, hotels seen first
    assert model.predict(_context("never seen"), 2) == ["hotels", "google"]
    assert len(model.predict(_context("flights"), 8)) == 5  # every known query once
    single = CoOccurrence(CoOccurrenceConfig(history=1)).fit(train)
    assert "frosting" not in single.predict(_context("cake", "flights"), 3)


def test_baselines_share_one_interface() -> None:
    models: list[Baseline] = [MostPopular(), UserFrequent(), CoOccurrence()]
    train = [_sample(("a",), ("b",))]
    for model in models:
        assert model.fit(train) is model
        assert len(model.predict(_context("a"), 1)) == 1


def test_co_occurrence_config_checks() -> None:
    for bad in ({"history": 0}, {"max_targets": 0}, {"decay": 0.0}, {"decay": 1.5}):
        with pytest.raises(TrainingError):
            CoOccurrenceConfig(**bad)
