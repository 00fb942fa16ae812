"""The x2q builder's pure parts: which triggers a window holds, popularity, the S ranking."""

from __future__ import annotations

import math

import pytest

from aigq.events import ClickEvent, HintClickEvent, SearchEvent
from cache.recent import trigger_member
from generators.think import parse_think
from generators.x2q_build import BuildConfig, fingerprint, trigger_prompt, trigger_text
from generators.x2q_rank import rank
from generators.x2q_triggers import DAY_MS, Popularity, collect, window

T0 = 1_146_000_000_000 // DAY_MS * DAY_MS


def _search(user: str, ts: int, query: str) -> SearchEvent:
    return SearchEvent(user_id=user, ts=ts, query=query)


def _click(user: str, ts: int, item: str, text: str, category: tuple[str, ...]) -> ClickEvent:
    return ClickEvent(user_id=user, ts=ts, item_id=item, item_text=text, category=category)


def test_collect_keys_triggers_as_the_worker_records_them() -> None:
    events = [
        _search("u1", T0 + 1, "Running  Shoes"),
        _search("u2", T0 + 5, "running shoes"),
        _click("u1", T0 + 2, "sku-1", "Pegasus 40", ("Sports", "Running Shoes")),
        HintClickEvent(
            user_id="u3", ts=T0 + 3, request_id="r", query="trail shoes", source="u2q", position=0
        ),
        _search("u1", T0 - 1, "too early"),  # before the window
        _search("u1", T0 + DAY_MS, "too late"),  # at its end: excluded
    ]
    triggers, popularity = collect(events, T0, T0 + DAY_MS)
    members = [t.member for t in triggers]
    # "running shoes" twice (two spellings, one key) comes first; the rest by newest first
    assert members == [
        "query:running shoes",
        "query:trail shoes",
        "category:running shoes",
        "item:sku-1",
    ]
    top = triggers[0]
    assert (top.count, top.last_ts, top.behaviour) == (
        2,
        T0 + 5,
        (T0 + 5, "search", "running shoes", ""),
    )
    category = triggers[2]
    assert category.behaviour == (T0 + 2, "click", "Running Shoes", "Sports>Running Shoes")
    assert triggers[3].behaviour[2] == "Pegasus 40"
    assert all(t.member == trigger_member(t.kind, trigger_text(t)) for t in triggers)
    assert popularity.counts == {"running shoes": 2, "trail shoes": 1}


def test_popularity_effectiveness_is_log_normalised() -> None:
    pop = Popularity({"google": 100, "weather": 9})
    assert pop.effectiveness("Google") == 1.0
    assert pop.effectiveness("weather") == pytest.approx(math.log(10) / math.log(101))
    assert pop.effectiveness("never searched") == 0.0
    assert Popularity({}).effectiveness("x") == 0.0
    assert pop.top(1) == [("google", 100.0)]


def test_window_and_empty_window() -> None:
    assert window(T0, 7) == (T0 - 7 * DAY_MS, T0)
    with pytest.raises(ValueError):
        window(T0, 0)
    with pytest.raises(ValueError):
        collect([], T0, T0)


def test_rank_scores_relevance_against_effectiveness() -> None:
    queries = ["a", "b", "B ", "c"]
    ranked = rank(queries, [0.9, 0.1, 0.99, 1.5], [0.0, 1.0, 1.0, 0.0], alpha=0.5)
    # "B " is a near-duplicate of "b" and goes; relevance 1.5 is clipped to 1
    assert [(s.query, s.score) for s in ranked] == [
        ("b", pytest.approx(0.55)),
        ("c", pytest.approx(0.5)),
        ("a", pytest.approx(0.45)),
    ]
    ties = rank(["x", "y"], [0.5, 0.5], [0.0, 0.0], alpha=1.0)
    assert [s.query for s in ties] == ["x", "y"]  # the model's order breaks ties
    with pytest.raises(ValueError):
        rank(["x"], [0.5], [0.0, 1.0], alpha=0.5)
    with pytest.raises(ValueError):
        rank(["x"], [0.5], [0.0], alpha=1.5)


def test_trigger_prompt_shows_the_one_behaviour_and_parses_a_think_answer() -> None:
    triggers, _ = collect([_search("u", T0, "cheap flights")], T0, T0 + 1)
    prompt = trigger_prompt(triggers[0], 10)
    assert prompt.startswith("Think, then recommend 10 queries.")
    assert "<1><Today><search> cheap flights" in prompt
    answer = "they want to travel cheaply\n<1>\ncheap flights to paris\ncheap hotels"
    assert parse_think(answer, 1).for_trigger(1) == ("cheap flights to paris", "cheap hotels")


def test_fingerprint_changes_with_the_triggers_and_the_settings() -> None:
    events = [_search("u", T0, "a b"), _search("u", T0 + 1, "c d")]
    triggers, _ = collect(events, T0, T0 + 10)
    base = fingerprint(triggers, BuildConfig())
    assert base == fingerprint(list(triggers), BuildConfig())
    assert base != fingerprint(triggers[:1], BuildConfig())
    assert base != fingerprint(triggers, BuildConfig(alpha=0.5))
    assert base != fingerprint(triggers, BuildConfig(model_version="aigq-think@v0002"))
