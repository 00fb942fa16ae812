"""AIGQ-Think's output format: rendering and parsing round-trip, every drop is named, copy
tokens expand, triggers outside the prompt's behaviours drop their pair."""

from __future__ import annotations

from collections import Counter

import pytest

from aigq.events import RegenerationRequest
from generators.prompt import PromptError, compressed_prompt
from generators.requests import prompt_for
from generators.think import (
    PROBLEMS,
    ThinkOutput,
    ThinkPair,
    parse_think,
    render_think,
    think_prompt,
    think_prompt_for,
    trigger_line,
)

NOW = 1_767_225_600_000
RECENT = (
    (NOW - 3_600_000, "search", "trail running shoes", ""),
    (NOW - 60_000, "click", "Nike Pegasus 40", "Sports>Running Shoes"),
)
SHOWN = ["yahoo mail", "paris hotels"]  # the prompt's history queries: <h1>, <h2>


def test_think_prompt_is_the_direct_prompt_with_the_think_instruction() -> None:
    direct = compressed_prompt((("t:shoes", 1.0),), RECENT, NOW, k=5, history=SHOWN)
    think = think_prompt((("t:shoes", 1.0),), RECENT, NOW, k=5, history=SHOWN)
    assert direct.startswith("Recommend 5 queries. ")
    assert think == "Think, then recommend 5 queries. " + direct[len("Recommend 5 queries. ") :]
    request = RegenerationRequest(
        user_id="u1", version=3, reason="drift", shift=0.5, event_ts=NOW, created_ts=NOW,
        fingerprint="fp", recent=RECENT, profile=(("t:shoes", 1.0),), history=tuple(SHOWN),
    )  # fmt: skip
    assert think_prompt_for(request, 5) == think
    assert prompt_for(request, 5) == direct


def test_trigger_lines_are_index_tokens_only() -> None:
    assert trigger_line("<2><5>") == (2, 5)
    assert trigger_line(" <1> <3> ") == (1, 3)  # spaces a decoder may put between tokens
    assert trigger_line("<2><2>") == (2, 2)  # repeats as written
    assert trigger_line("<h2>") is None  # a copy token: a query line
    assert trigger_line("<2> shoes") is None
    assert trigger_line("") is None


def test_render_then_parse_round_trips_with_copy_tokens() -> None:
    pairs = [
        ThinkPair((2, 5), ("running shoes", "Yahoo Mail")),  # the second is history query 1
        ThinkPair((1,), ("trail shoes",)),
    ]
    text = render_think("The user shops for running shoes.", pairs, shown=SHOWN)
    assert text == (
        "The user shops for running shoes.\n<2><5>\nrunning shoes\n<h1>\n<1>\ntrail shoes"
    )
    parsed = parse_think(text, n_behaviours=5, shown=SHOWN)
    assert parsed == ThinkOutput(
        "The user shops for running shoes.",
        (ThinkPair((2, 5), ("running shoes", "yahoo mail")), ThinkPair((1,), ("trail shoes",))),
        problems=(),
        slots=(0, 1),
    )
    assert parsed.queries == ("running shoes", "yahoo mail", "trail shoes")
    assert parsed.for_trigger(5) == ("running shoes", "yahoo mail")
    assert parsed.for_trigger(1) == ("trail shoes",)
    assert parsed.for_trigger(3) == ()
    # and rendering what was parsed gives the same text again
    assert render_think(parsed.rationale, parsed.pairs, shown=SHOWN) == text


def test_one_query_may_serve_two_trigger_sets() -> None:
    parsed = parse_think("why\n<1>\nshoes\nsocks\n<2>\nshoes", n_behaviours=2)
    assert parsed.problems == ()
    assert parsed.queries == ("shoes", "socks")  # each once for u2q
    assert parsed.for_trigger(2) == ("shoes",)


def test_render_leaves_out_what_the_parser_would_drop() -> None:
    pairs = [
        ((1,), ["ok query", "x", "ok query"]),  # too short, then a duplicate: one query left
        ((2,), ["!!!"]),  # no valid query: the pair goes
        ((), ["no trigger"]),  # no trigger: the pair goes
        ((21,), ["index past the prompt's twenty"]),
        ((3, 3), ["twice"]),  # the repeat is written once
    ]
    text = render_think("  a  reason \n with a break ", pairs)
    assert text == "a reason with a break\n<1>\nok query\n<3>\ntwice"
    assert parse_think(text, n_behaviours=3).problems == ()
    with pytest.raises(PromptError):
        render_think("<>", [((1,), ["q"])])  # a rationale that cleans to nothing


def test_render_keeps_at_most_k_queries() -> None:
    text = render_think("why", [((1,), ["a1", "a2"]), ((2,), ["b1", "b2"])], k=3)
    assert text == "why\n<1>\na1\na2\n<2>\nb1"


def test_every_problem_is_named_where_it_happens() -> None:
    text = "\n".join(
        [
            "<1>",  # line 1 is a trigger line: no rationale (and the pair is read)
            "first",
            "<9>",  # 9 > 3 behaviours: the pair and its line go, counted once
            "beyond one",
            "beyond two",
            "<2><2>",  # the repeat is dropped
            "x",  # too short
            "first",  # the pair's only valid query so far
            "FIRST",  # a duplicate within the pair
            "<3>",  # no query line at all
            "<0>",  # index 0 is no behaviour
            "kept",
            "<1>",
            "x",  # all of the pair's lines invalid
        ]
    )
    parsed = parse_think(text, n_behaviours=3)
    assert parsed.rationale == ""
    assert [p.triggers for p in parsed.pairs] == [(1,), (2,)]
    assert parsed.slots == (0, 2)  # the dropped <9> pair leaves a gap
    assert Counter(parsed.problems) == {
        "no_rationale": 1, "index_out_of_range": 2, "repeated_index": 1,
        "invalid_query": 2, "duplicate_query": 1, "empty_pair": 1, "no_valid_query": 1,
    }  # fmt: skip
    assert set(parsed.problems) <= set(PROBLEMS)


def test_lines_outside_a_pair_and_past_k_are_counted() -> None:
    parsed = parse_think("why\nstray\n\n<1>\na1\na2\n<2>\nb1\n\nb2", n_behaviours=2, k=3)
    assert parsed.rationale == "why"
    assert parsed.pairs == (ThinkPair((1,), ("a1", "a2")), ThinkPair((2,), ("b1",)))
    assert Counter(parsed.problems) == {"query_outside_pair": 1, "over_k": 1}  # blanks: nothing


def test_copy_tokens_expand_and_one_past_the_history_is_invalid() -> None:
    parsed = parse_think("why\n<1>\n<h2>\n<h3>\nnew one", n_behaviours=1, shown=SHOWN)
    assert parsed.pairs == (ThinkPair((1,), ("paris hotels", "new one")),)
    assert parsed.problems == ("invalid_query",)  # <h3>: the prompt shows two


def test_an_unsafe_query_is_named() -> None:
    parsed = parse_think("why\n<1>\nporn\nshoes", n_behaviours=1)
    assert parsed.pairs == (ThinkPair((1,), ("shoes",)),)
    assert parsed.problems == ("unsafe_query",)


def test_out_of_range_with_no_behaviours_and_empty_text() -> None:
    parsed = parse_think("why\n<1>\nshoes", n_behaviours=0)
    assert parsed.pairs == ()
    assert parsed.problems == ("index_out_of_range",)
    empty = parse_think("", n_behaviours=3)
    assert (empty.rationale, empty.pairs, empty.problems) == ("", (), ("no_rationale",))
    with pytest.raises(PromptError):
        parse_think("why", n_behaviours=-1)
    with pytest.raises(PromptError):
        parse_think("why", n_behaviours=1, k=0)
