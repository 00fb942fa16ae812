"""The composition rule and the text normaliser: pure functions, plain lists, no Redis."""

from __future__ import annotations

import pytest

from cache.compose import Hint, TriggerHits, compose
from cache.recent import Trigger
from cache.text import normalize
from cache.u2q import U2QRun

TS = 1_700_000_000_000


def run(*queries: str, event_ts: int = TS) -> U2QRun:
    return U2QRun(queries, "m-1", 7, event_ts, event_ts + 500, "drift")


def hits(kind: str, text: str, ts: int, *queries: str) -> TriggerHits:
    return TriggerHits(Trigger(kind, text, ts), list(queries))  # type: ignore[arg-type]


def queries(result: list[Hint]) -> list[str]:
    return [h.query for h in result]


def test_u2q_alone_keeps_its_order_and_is_cut_to_k() -> None:
    result = compose(run("a", "b", "c", "d"), [], ["pop"], k=3)
    assert result == [Hint("a", "u2q"), Hint("b", "u2q"), Hint("c", "u2q")]


def test_fresh_triggers_interleave_with_u2q_x2q_first() -> None:
    newer = hits("item", "i1", TS + 1, "x1", "x2", "x3")
    result = compose(run("a", "b"), [newer], [], k=10)
    assert queries(result) == ["x1", "a", "x2", "b", "x3"]
    assert result[0] == Hint("x1", "x2q", "item:i1")
    assert result[1] == Hint("a", "u2q", None)


def test_triggers_the_run_has_seen_come_after_it() -> None:
    older = hits("query", "shoes", TS - 1, "o1", "o2")
    same_time = hits("category", "boots", TS, "o3")
    newer = hits("item", "i1", TS + 5, "n1")
    result = compose(run("a", "b", "c"), [newer, same_time, older], [], k=10)
    assert queries(result) == ["n1", "a", "b", "c", "o3", "o1", "o2"]
    assert [h.source for h in result] == ["x2q", "u2q", "u2q", "u2q", "x2q", "x2q", "x2q"]
    assert result[4].trigger == "category:boots"
    assert result[5].trigger == "query:shoes"


def test_several_triggers_merge_round_robin_newest_first() -> None:
    t1 = hits("item", "new", TS + 3, "a1", "a2", "a3")
    t2 = hits("item", "mid", TS + 2, "b1")
    t3 = hits("item", "old", TS + 1, "c1", "c2")
    result = compose(None, [t1, t2, t3], [], k=10)
    assert queries(result) == ["a1", "b1", "c1", "a2", "c2", "a3"]


def test_without_a_run_every_trigger_is_fresh_and_popular_fills_the_rest() -> None:
    result = compose(None, [hits("query", "q", 1, "x", "y")], ["pop", "X", "pop2"], k=4)
    # a user whose fresh trigger is indexed but whose list was never generated: the x2q
    # queries, then popular ones (never a near-duplicate of them) up to k
    assert result == [
        Hint("x", "x2q", "query:q"), Hint("y", "x2q", "query:q"),
        Hint("pop", "popular"), Hint("pop2", "popular"),
    ]  # fmt: skip
    assert queries(compose(None, [hits("query", "q", 1, "x")], ["pop"], k=1)) == ["x"]
    # with history or a u2q run, x2q is never followed by popular queries
    assert queries(compose(run("a"), [hits("query", "q", 1, "x")], ["pop"], k=5)) == ["a", "x"]
    only_history = compose(None, [hits("query", "q", 1, "x")], ["pop"], k=5, history=["h"])
    assert queries(only_history) == ["h", "x"]


def test_near_duplicates_are_dropped_first_spelling_kept() -> None:
    newer = hits("item", "i", TS + 1, "Running  Shoes", "TRAIL jacket")
    result = compose(run("running shoes", " trail Jacket ", "socks"), [newer], [], k=10)
    assert queries(result) == ["Running  Shoes", "TRAIL jacket", "socks"]
    assert [h.source for h in result] == ["x2q", "x2q", "u2q"]


def test_unicode_compatibility_forms_are_one_query() -> None:
    full_width = "\uff49\uff50\uff48\uff4f\uff4e\uff45\u00a0Case"  # "iphone Case", NBSP
    result = compose(run(full_width, "iphone case", "Straße", "STRASSE"), [], [], k=10)
    assert queries(result) == [full_width, "Straße"]


def test_blank_queries_are_skipped_and_kept_ones_are_stripped() -> None:
    result = compose(run("  ", "", " padded "), [hits("item", "i", TS + 1, "\t")], [], k=10)
    assert result == [Hint("padded", "u2q")]


def test_popular_alone_when_everything_else_is_empty() -> None:
    assert compose(None, [], ["p1", "P1", "p2", "p3"], k=2) == [
        Hint("p1", "popular"),
        Hint("p2", "popular"),
    ]
    assert compose(None, [hits("item", "i", 1)], ["p1"], k=5) == [Hint("p1", "popular")]
    assert queries(compose(run("a"), [], ["p1"], k=5)) == ["a"]  # no padding with popular
    assert compose(run("  "), [], ["p1"], k=5) == [Hint("p1", "popular")]
    assert compose(None, [], [], k=5) == []


def test_k_below_one_gives_nothing() -> None:
    assert compose(run("a"), [], ["p"], k=0) == []
    assert compose(run("a"), [], ["p"], k=-3) == []


def test_k_cut_lands_inside_the_interleave() -> None:
    newer = hits("item", "i", TS + 1, "x1", "x2")
    assert queries(compose(run("a", "b"), [newer], [], k=3)) == ["x1", "a", "x2"]
    assert queries(compose(run("a", "b"), [newer], [], k=1)) == ["x1"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  Running   Shoes ", "running shoes"),
        ("TAB\tand\nnewline", "tab and newline"),
        ("\uff26\uff55\uff4c\uff4c\uff0d\uff57\uff49\uff44\uff54\uff48", "full-width"),
        ("Straße", "strasse"),
        ("", ""),
        (" \t ", ""),
    ],
)
def test_normalize(raw: str, expected: str) -> None:
    assert normalize(raw) == expected


def test_normalize_cuts_without_a_trailing_space() -> None:
    assert normalize("ab cd", max_chars=3) == "ab"
    assert normalize("x" * 300, max_chars=200) == "x" * 200


# --- history: the user's own past queries lead (issue 16, item 4) ----------------------------


def test_history_comes_first_then_the_x2q_and_u2q_merge() -> None:
    newer = hits("item", "i1", TS + 1, "x1", "x2")
    result = compose(run("a", "b"), [newer], ["pop"], k=10, history=["h1", "h2"])
    assert queries(result) == ["h1", "h2", "x1", "a", "x2", "b"]
    assert result[0] == Hint("h1", "history", None)
    assert [h.source for h in result[2:]] == ["x2q", "u2q", "x2q", "u2q"]


def test_history_is_cut_to_k_and_deduplicated_against_the_generated_lists() -> None:
    result = compose(run("Running Shoes", "b"), [], [], k=3, history=["running  shoes", "h2"])
    assert result == [
        Hint("running  shoes", "history"),  # the first spelling seen is kept
        Hint("h2", "history"),
        Hint("b", "u2q"),
    ]
    assert queries(compose(run("a"), [], [], k=2, history=["h1", "h2", "h3"])) == ["h1", "h2"]


def test_history_alone_is_not_a_fallback_case() -> None:
    result = compose(None, [], ["pop"], k=5, history=["h1"])
    assert result == [Hint("h1", "history")]  # popular only when every source is empty
    assert compose(None, [], ["pop"], k=5, history=["  "]) == [Hint("pop", "popular")]


def test_without_history_the_list_is_what_it_was() -> None:
    newer = hits("item", "i1", TS + 1, "x1")
    assert compose(run("a"), [newer], ["p"], 5) == compose(run("a"), [newer], ["p"], 5, ())
