"""The hint safety rule (aigq.safety), and each place that applies it."""

from __future__ import annotations

import pytest

from aigq.events import SearchEvent
from aigq.safety import is_blocked
from cache.history import fold, top_queries
from generators.output import validate
from training.served import popular_queries


@pytest.mark.parametrize(
    "query",
    ["free porn", "FreePorn videos", "teen xxx", "nude beach pics", "Sexy Girls", "preteenmodels"],
)
def test_explicit_queries_are_blocked(query: str) -> None:
    assert is_blocked(query)


@pytest.mark.parametrize(
    "query",
    ["bank of america", "cockatoo care", "torpedo", "analysis of variance", "sussex county"],
)
def test_ordinary_queries_are_not(query: str) -> None:
    assert not is_blocked(query)


def test_history_never_lets_a_blocked_query_out() -> None:
    history = fold([("free porn", 1), ("free porn", 2), ("weather", 3), ("bank", 4)])
    assert top_queries(history, 2) == ["bank", "weather"]  # the stronger "free porn" left out
    assert "free porn" in history  # the user's own record keeps it


def test_output_validation_drops_and_counts_blocked_queries() -> None:
    lists, stats = validate(["weather\nhot sexy singles\nbank of america"])
    assert lists == [["weather", "bank of america"]]
    assert stats.dropped_unsafe == 1


def test_popular_queries_skip_blocked_ones() -> None:
    events = [SearchEvent(user_id="u", ts=1_200_000_000_000 + i, query="porn") for i in range(5)]
    events.append(SearchEvent(user_id="u", ts=1_200_000_000_100, query="weather"))
    assert popular_queries(events, 3) == ["weather"]
