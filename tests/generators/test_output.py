"""Parsing generated text: accepted formats, garbage and near-duplicates dropped, stats."""

from __future__ import annotations

import pytest

from generators.output import OutputStats, line_verdicts, parse_queries, validate
from generators.prompt import PromptError, format_target

QUERIES = [
    "running shoes",
    "trail running shoes women",
    "iphone 17 case",
    "café near me",
    "東京 hotels",
    "ps5 controller",
]


def test_format_target_round_trips() -> None:
    assert parse_queries(format_target(QUERIES)) == QUERIES
    mixed_case = ["Running Shoes", "iPhone 17 Case"]
    assert parse_queries(format_target(mixed_case)) == ["running shoes", "iphone 17 case"]


def test_accepts_numbered_bulleted_and_semicolon_lists() -> None:
    text = "1. running shoes\n2) iphone 17 case\n- ps5 controller;; * gym bag\n10. 3d printer"
    assert parse_queries(text) == [
        "running shoes",
        "iphone 17 case",
        "ps5 controller",
        "gym bag",
        "3d printer",
    ]
    assert parse_queries("2.5 inch ssd\n1. 5 inch screws") == ["2.5 inch ssd", "5 inch screws"]


def test_strips_special_tokens_and_chat_markers() -> None:
    text = "<1><Today><search> running shoes\r\niphone case<|im_end|>\n</s><|endoftext|>"
    assert parse_queries(text) == ["running shoes", "iphone case"]


def test_drops_garbage() -> None:
    text = "\n".join(
        [
            "ok query",
            "x",
            "!!! ???",
            "y" * 65,
            "one two three four five six seven eight nine ten eleven",
            "\x00\x1b[0m",
            "",
            "   ",
            "fine again",
        ]
    )
    assert parse_queries(text) == ["ok query", "fine again"]
    assert parse_queries("y" * 64) == ["y" * 64]
    assert parse_queries("a b c", max_words=2) == []


def test_drops_sampling_loops_but_keeps_real_repeats() -> None:
    # seen from the default model sampled at T 0.7 in the demo
    text = "flight court\nflight flight flight flight\nwin flight flight flight air\nbora bora"
    assert parse_queries(text) == ["flight court", "bora bora"]
    assert parse_queries("new york new york\nny ny 10022") == ["new york new york", "ny ny 10022"]
    _, stats = validate(["a b b b c"])
    assert stats.dropped_invalid == 1


def test_drops_near_duplicates_of_earlier_queries_keeping_order() -> None:
    text = "\n".join(
        [
            "running shoes men",
            "Running   Shoes, Men",
            "men running shoes",
            "iphone case",
            "running shoes men nike sale",
            "iphone case!",
            "shoes",
        ]
    )
    assert parse_queries(text) == [
        "running shoes men",
        "iphone case",
        "running shoes men nike sale",
        "shoes",
    ]
    assert parse_queries("a b c d e\na b c d e f", near_duplicate=0.8) == ["a b c d e"]
    assert parse_queries("a b c d e\na b c d e f", near_duplicate=0.9) == [
        "a b c d e",
        "a b c d e f",
    ]


def test_k_is_respected() -> None:
    text = "\n".join(f"query {i}" for i in range(30))
    assert parse_queries(text, k=3) == ["query 0", "query 1", "query 2"]
    assert len(parse_queries(text)) == 10


def test_bad_arguments() -> None:
    with pytest.raises(PromptError):
        parse_queries("a", k=0)
    with pytest.raises(PromptError):
        parse_queries("a", near_duplicate=0.0)


def test_validate_counts_and_never_returns_garbage() -> None:
    texts = [
        "running shoes\nrunning shoes\nx\niphone case",
        "<|im_end|>",
        "!!!\n???",
        "",
        "\n".join(f"query {i}" for i in range(12)),
    ]
    lists, stats = validate(texts, k=10)
    assert lists == [
        ["running shoes", "iphone case"],
        [],
        [],
        [],
        [f"query {i}" for i in range(10)],
    ]
    assert stats == OutputStats(
        lists=5, queries_kept=12, dropped_invalid=3, dropped_duplicate=1, malformed_lists=3
    )
    total = OutputStats()
    total.add(stats)
    total.add(stats)
    assert total.lists == 10 and total.malformed_lists == 6 and total.queries_kept == 24


SHOWN = ["paris hotels", "yahoo mail"]  # a prompt's history queries, for <h1> and <h2>


def test_line_verdicts_judge_each_line() -> None:
    text = "1. running shoes\nRunning Shoes!\n\nx\nsex offender registry\n;;iphone case;;gym bag"
    assert line_verdicts(text) == [
        ("running shoes", "kept"),  # the list marker goes
        ("running shoes!", "duplicate"),  # same words as line 0
        ("", "empty"),
        ("x", "invalid"),  # one character
        ("sex offender registry", "unsafe"),
        ("iphone case", "kept"),  # a line is its first non-empty piece: "gym bag" is not judged
    ]
    assert line_verdicts("") == [("", "empty")]
    assert line_verdicts("a b c", max_words=2) == [("a b c", "invalid")]


def test_line_verdicts_expand_copy_tokens() -> None:
    text = "<h2>\nweather\n<h1>\n<h9>\nYahoo Mail"
    assert line_verdicts(text, shown=SHOWN) == [
        ("yahoo mail", "kept"),
        ("weather", "kept"),
        ("paris hotels", "kept"),
        ("", "invalid"),  # no 9th history query: a copy of nothing
        ("yahoo mail", "duplicate"),  # the words <h2> copied
    ]
    # without the prompt's history, a copy token points at nothing
    assert line_verdicts("<h1>") == [("", "invalid")]


@pytest.mark.parametrize("k", [3, 10])
@pytest.mark.parametrize(
    "text",
    [
        "\n".join(QUERIES),
        "1. running shoes\n2) iphone 17 case\n- ps5 controller\n10. 3d printer\n",
        "<h1>\nweather\n<h2>\n<h9>\nrunning shoes\nRunning Shoes\n\nx\nsex offender registry",
        "\n".join(f"query {i}" for i in range(14)),
        "ok query\n!!! ???\n" + "y" * 65 + "\n\x00\x1b[0m\n   \nfine again",
        "flight court\nflight flight flight flight\nbora bora\nBora  Bora",
        "<1><Today><search> running shoes\niphone case<|im_end|>\n</s><|endoftext|>",
        "",
        "<|im_end|>",
    ],
)
def test_line_verdicts_keep_what_parse_queries_keeps(text: str, k: int) -> None:
    # without ";;" or "\r" (and copy tokens alone on their line) a line is one piece
    kept = [query for query, verdict in line_verdicts(text, shown=SHOWN) if verdict == "kept"]
    assert kept[:k] == parse_queries(text, k=k, shown=SHOWN)
