"""AIGQ-Think's targets: trigger alignment on a hand-built context, the rationale filter, the
counts that account for every sample, the teacher client's requests, and (integration) the
whole path against a real OpenAI-compatible server."""

from __future__ import annotations

import asyncio

import pytest

from aigq.datasets.synthetic import SyntheticConfig, generate
from aigq.dev.probe import free_port
from generators.prompt import MAX_INDEX, history_queries
from generators.think import ThinkPair, parse_think, think_prompt, think_prompt_for
from training import TrainingError
from training.cli_think import teacher_config
from training.samples import Context, Sample, think_samples
from training.teacher import Teacher, TeacherConfig, TeacherError
from training.think import (
    RationaleVerdict,
    ThinkCounts,
    align,
    check_rationale,
    content_words,
    question,
    shown_behaviours,
    single_pairs,
    singles,
    spread,
    targets_from_answers,
    teacher_prompt,
    think_targets,
    think_targets_async,
)

HOUR = 3_600_000
NOW = 1_767_225_600_000 + 9 * HOUR  # 2026-01-01T09:00Z


def context(
    recent: tuple[tuple[int, str, str, str], ...], history: tuple[str, ...] = ()
) -> Context:
    return Context(
        user_id="u1", cut_ms=NOW + 1, recent=recent, profile=(), searches=(), version=4,
        fingerprint="fp", last_ts=NOW, history=history,
    )  # fmt: skip


# oldest first, as a request carries them; the prompt numbers them newest first
TRIP_AND_SHOES = context(
    (
        (NOW - 72 * HOUR, "search", "cheap flights paris", ""),  # <4>
        (NOW - 2 * HOUR, "click", "http://www.expedia.com/hotels/paris-deals", ""),  # <3>
        (NOW - 1 * HOUR, "search", "running shoes", ""),  # <2>
        (NOW, "click", "Nike Pegasus 40", "Sports>Running Shoes"),  # <1>
    ),
    history=("yahoo mail",),
)


def test_content_words_skip_short_words_digits_and_stopwords() -> None:
    assert content_words("The best Nike shoes for 2026, in red!") == {"nike", "shoes", "red"}


def test_shown_behaviours_are_numbered_as_the_prompt_numbers_them() -> None:
    shown = shown_behaviours(TRIP_AND_SHOES)
    assert [(b.index, b.line) for b in shown] == [
        (1, "1. today, clicked Running Shoes Nike Pegasus 40"),
        (2, "2. today, searched running shoes"),
        (3, "3. today, clicked expedia hotels paris deals"),
        (4, "4. 3 days ago, searched cheap flights paris"),
    ]
    assert shown[2].words == {"expedia", "hotels", "paris", "deals"}  # the URL's words
    assert "<4><3_days_ago><search> cheap flights paris" in think_prompt_for(
        TRIP_AND_SHOES.request()
    )


def test_labels_are_grouped_by_the_behaviours_they_share_a_word_with() -> None:
    labels = ["paris hotels", "trail running shoes", "weather today", "nike socks", "flights"]
    assert align(TRIP_AND_SHOES, labels) == [
        ThinkPair((3, 4), ("paris hotels",)),  # "paris" in <3> and <4>, "hotels" in <3>
        # "running shoes" in <1> and <2>; "weather today" shares nothing: the newest two
        ThinkPair((1, 2), ("trail running shoes", "weather today")),
        ThinkPair((1,), ("nike socks",)),
        ThinkPair((4,), ("flights",)),
    ]


def test_trigger_sets_keep_the_newest_and_only_what_the_prompt_shows() -> None:
    # 25 searches for "tea" variants: the prompt shows the newest 20, the set names 2 of them
    many = context(
        tuple((NOW - i * HOUR, "search", f"green tea {i}", "") for i in range(24, -1, -1))
    )
    assert len(shown_behaviours(many)) == MAX_INDEX
    assert align(many, ["tea cups"], max_triggers=2) == [ThinkPair((1, 2), ("tea cups",))]
    one = context(((NOW, "search", "kettle", ""),))
    assert align(one, ["piano"]) == [ThinkPair((1,), ("piano",))]  # the only behaviour
    assert align(context(()), ["piano"]) == []  # nothing shown: no pair


CONTENT = frozenset({"paris", "hotels", "running", "shoes", "trip"})


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (
            "Rationale: The user plans a trip to Paris and compares hotels.\nmore text",
            ("the user plans a trip to paris and compares hotels", "kept"),  # plain words
        ),
        ('"They want running shoes for a race."', ("they want running shoes for a race", "kept")),
        (
            "**Answer:** Sure, the user wants running shoes for trail runs",
            ("the user wants running shoes for trail runs", "kept"),
        ),
        ("\n\n  \n", ("", "empty")),
        (
            "The user <|im_end|> likes running shoes",
            ("The user <|im_end|> likes running shoes", "markup"),
        ),
        ("Running shoes.", ("Running shoes.", "length")),  # 2 words < 4
        (" ".join(["shoes"] * 41), (" ".join(["shoes"] * 41), "length")),  # > 40 words
        (
            "I'm sorry, I cannot tell what the user wants from shoes.",
            ("I'm sorry, I cannot tell what the user wants from shoes.", "refusal"),
        ),
        (
            "In one sentence of plain words: running shoes for Paris.",
            ("In one sentence of plain words: running shoes for Paris.", "echo"),
        ),
        (
            "1. today, searched running shoes again",
            ("1. today, searched running shoes again", "echo"),
        ),
        (
            "The sky is lovely this time of year.",
            ("The sky is lovely this time of year.", "unaligned"),
        ),
    ],
)
def test_check_rationale(answer: str, expected: tuple[str, str]) -> None:
    assert check_rationale(answer, CONTENT) == expected


def test_counts_account_for_every_verdict() -> None:
    counts = ThinkCounts(asked=6, no_pairs=1)
    verdicts: list[RationaleVerdict] = ["kept", "kept", "length", "markup", "unaligned"]
    for verdict in verdicts:
        counts.add(verdict)
    assert (counts.answered, counts.kept, counts.unparsed, counts.unaligned) == (5, 2, 2, 1)
    assert counts.unparsed_reasons == {"length": 1, "markup": 1}
    assert counts.asked == (
        counts.kept + counts.unparsed + counts.unaligned + counts.no_pairs + counts.errors
    )


def test_spread_takes_evenly_spaced_samples() -> None:
    assert spread(list(range(10)), 3) == [0, 3, 6]  # i * 10 // 3
    assert spread(list(range(4)), 0) == [0, 1, 2, 3]  # 0: all
    assert spread(list(range(4)), 9) == [0, 1, 2, 3]
    with pytest.raises(TrainingError):
        spread([1], -1)


def test_teacher_prompt_numbers_behaviours_and_cues_a_completion_model() -> None:
    shown = shown_behaviours(TRIP_AND_SHOES)
    chat = teacher_prompt(shown, ["paris hotels", "trail <b>shoes</b>"])
    assert chat.startswith("A user's recent behaviours, newest first:\n1. today, clicked ")
    assert "\nAfterwards the user searched: paris hotels; trail b shoes /b.\n" in chat
    assert teacher_prompt(shown, ["x"], api="completions").endswith("behaviours.\nAnswer:")


def test_teacher_requests_and_answers_in_both_dialects() -> None:
    chat = Teacher(TeacherConfig("http://127.0.0.1:9", model="m"))
    assert chat.path == "/v1/chat/completions"
    assert chat.payload("hi") == {
        "model": "m", "max_tokens": 48, "temperature": 0.0, "n": 1,
        "messages": [{"role": "user", "content": "hi"}],
    }  # fmt: skip
    assert chat.answer_text(b'{"choices": [{"message": {"content": "why"}}]}') == "why"
    plain = Teacher(TeacherConfig("http://127.0.0.1:9", api="completions"))
    assert plain.path == "/v1/completions"
    assert plain.payload("hi")["prompt"] == "hi"
    assert plain.answer_text(b'{"choices": [{"text": "because"}]}') == "because"
    for body in (b"not json", b'{"choices": []}', b'{"choices": [{"message": {"content": null}}]}'):
        with pytest.raises(TeacherError):
            chat.answer_text(body)


def test_teacher_settings_are_checked() -> None:
    with pytest.raises(TrainingError):
        TeacherConfig("127.0.0.1:8000")  # no scheme
    with pytest.raises(TrainingError):
        TeacherConfig("http://h", concurrency=0)
    with pytest.raises(TrainingError, match="teacher-url"):
        teacher_config("", "smollm2", "chat", 4)


def test_answers_become_targets_and_every_sample_is_counted() -> None:
    labels = ("Paris hotels", "<h1>", "yahoo mail", "x", "trail running shoes")
    trip = question(Sample("think", TRIP_AND_SHOES, labels, None), k=10)
    assert trip is not None
    assert trip.prompt == think_prompt_for(TRIP_AND_SHOES.request(), 10)
    # "<h1>" cleans to "h1", a query; "x" is too short; "yahoo mail" is shown history
    assert trip.pairs == [
        ThinkPair((3, 4), ("paris hotels",)),
        ThinkPair((1, 2), ("h1", "yahoo mail", "trail running shoes")),
    ]
    assert "Afterwards the user searched: paris hotels; h1; yahoo mail; trail" in trip.text
    nothing = question(Sample("think", context(()), labels, None), k=10)  # no behaviour
    assert nothing is None
    answers: list[str | TeacherError] = [
        "Reason: the user books a Paris trip and runs.",
        TeacherError("timed out"),
        "Nothing to say here at all.",  # no word of the sample: unaligned
        "ok",  # one word: unparsed
    ]
    pairs, counts = targets_from_answers([trip, nothing, trip, trip, trip], answers)
    rationale = "the user books a paris trip and runs"  # as plain words
    assert pairs[0] == (
        trip.prompt,
        f"{rationale}\n<3><4>\nparis hotels\n<1><2>\nh1\n<h1>\ntrail running shoes",
    )
    assert len(pairs) == 1
    # one one-behaviour pair per pair, the prompt showing only its newest behaviour (the x2q
    # builder's prompt), no rationale, queries written out (no history is shown there)
    expedia = think_prompt((), (TRIP_AND_SHOES.recent[1],), TRIP_AND_SHOES.recent[1][0], 10)
    nike = think_prompt((), (TRIP_AND_SHOES.recent[3],), TRIP_AND_SHOES.recent[3][0], 10)
    assert singles(trip) == [
        (expedia, "<1>\nparis hotels"),
        (nike, "<1>\nh1\nyahoo mail\ntrail running shoes"),
    ]
    assert single_pairs([Sample("think", TRIP_AND_SHOES, labels, None)]) == singles(trip)
    assert parse_think(singles(trip)[1][1], 1).for_trigger(1) == (
        "h1",
        "yahoo mail",
        "trail running shoes",
    )
    assert (counts.asked, counts.no_pairs, counts.errors, counts.answered) == (5, 1, 1, 3)
    assert (counts.kept, counts.unaligned, counts.unparsed) == (1, 1, 1)
    assert counts.unparsed_reasons == {"length": 1}
    assert counts.first_error == "timed out"
    target = parse_think(pairs[0][1], 4, shown=trip.shown)
    assert [p.triggers for p in target.pairs] == [(3, 4), (1, 2)]
    assert target.for_trigger(1) == ("h1", "yahoo mail", "trail running shoes")
    with pytest.raises(TrainingError):
        targets_from_answers([trip], [])


def test_an_unreachable_teacher_is_a_training_error() -> None:
    sample = Sample("think", TRIP_AND_SHOES, ("paris hotels",), None)
    teacher = Teacher(TeacherConfig(f"http://127.0.0.1:{free_port()}", timeout_s=5))
    with pytest.raises(TeacherError, match="answered none of 1") as info:
        think_targets([sample], teacher)
    assert isinstance(info.value, TrainingError)
    # a sample without a pair is counted, and the teacher is not asked for it
    empty = Sample("think", context(()), ("paris hotels",), None)
    pairs, counts = asyncio.run(think_targets_async([empty], teacher))
    assert pairs == []
    assert (counts.asked, counts.no_pairs, counts.answered) == (1, 1, 0)


@pytest.mark.integration
def test_teacher_on_a_real_server_accounts_for_every_sample(vllm_server: str) -> None:
    """The tiny model's rationales are nonsense; what is checked is the path: real requests,
    every sample counted once, and each kept target parsing back to its pairs."""
    samples = think_samples(generate(SyntheticConfig(users=6, days=3, seed=3)))[:12]
    assert samples
    config = TeacherConfig(vllm_server, model="aigq-direct", api="completions", max_tokens=12)
    pairs, counts = think_targets(samples, Teacher(config), k=5)
    assert counts.asked == len(samples)
    assert counts.errors == 0 and counts.answered > 0
    assert counts.answered == counts.kept + counts.unparsed + counts.unaligned
    assert counts.asked == (
        counts.kept + counts.unparsed + counts.unaligned + counts.no_pairs + counts.errors
    )
    assert len(pairs) == counts.kept
    by_prompt = {think_prompt_for(s.context.request(), 5): s for s in samples}
    for prompt, target in pairs:
        sample = by_prompt[prompt]
        shown = len(shown_behaviours(sample.context))
        parsed = parse_think(target, shown, k=5, shown=history_queries(sample.context.history))
        assert parsed.rationale and parsed.pairs and parsed.problems == ()
        assert len(parsed.queries) <= 5
