"""Parsing generated text: accepted formats, garbage and near-duplicates dropped, stats."""

from __future__ import annotations

import pytest

from generators.output import OutputStats, parse_queries, validate
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
