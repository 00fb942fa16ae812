"""IL-GRPO's rewards on hand-computed examples: the CTR, ROUGE-L and length parts of a slot's
reward, the format and repetition parts of a list's, and which query each slot is judged as
(copy tokens expanded, position-wise: line j is slot j)."""

from __future__ import annotations

import math

import pytest

from training import TrainingError
from training.grpo_rewards import (
    RewardConfig,
    ctr_reward,
    format_reward,
    index_rouge_l,
    length_reward,
    query_reward,
    repetition_penalty,
    score_rollout,
    slot_queries,
    trigger_rewards,
)

SHOWN = ["paris hotels", "yahoo mail"]  # the prompt's history queries: <h1>, <h2>


def test_ctr_reward_is_scaled_and_clipped() -> None:
    assert math.isclose(ctr_reward(0.1, gamma=2.0, beta=1.0), 0.2)  # 2 * 0.1
    assert ctr_reward(0.7, gamma=2.0, beta=1.0) == 1.0  # 2 * 0.7 = 1.4 -> beta
    assert ctr_reward(-0.1, gamma=2.0, beta=1.0) == 0.0  # below 0 -> 0
    assert ctr_reward(0.3, gamma=2.0, beta=0.5) == 0.5  # 0.6 -> beta 0.5


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (0, 0.0),  # empty
        (1, 1.0),
        (6, 1.0),  # ideal
        (7, 0.75),  # (10 - 7) / (10 - 6)
        (8, 0.5),  # (10 - 8) / 4
        (9, 0.25),  # (10 - 9) / 4
        (10, 0.0),  # max
        (12, 0.0),  # past max
    ],
)
def test_length_reward(words: int, expected: float) -> None:
    query = " ".join(f"w{i}" for i in range(words))
    assert length_reward(query, ideal_words=6, max_words=10) == expected


def test_format_reward_is_the_share_of_good_lines_within_k() -> None:
    assert format_reward([], k=10) == 0.0  # no line at all
    # kept and duplicate lines are well-formed; invalid, empty and unsafe ones are not: 2 / 4
    assert format_reward(["kept", "duplicate", "invalid", "empty"], k=10) == 0.5
    assert format_reward(["unsafe", "kept"], k=10) == 0.5  # 1 / 2
    # three kept lines for k = 2: the third is one too many, 2 / 3
    assert math.isclose(format_reward(["kept", "kept", "kept"], k=2), 2 / 3)


def test_repetition_penalty_is_minus_the_share_of_duplicates() -> None:
    assert repetition_penalty([]) == 0.0
    assert repetition_penalty(["kept", "kept"]) == 0.0
    # 2 duplicates of 4 lines: -2 / 4
    assert repetition_penalty(["kept", "duplicate", "duplicate", "invalid"]) == -0.5


def test_query_reward_sums_ctr_rouge_and_length() -> None:
    config = RewardConfig(gamma=2.0)  # w_ctr 1, gamma 2, beta 1, w_rouge 1, w_length 0.2
    # ROUGE-L("cheap flights", "cheap flights paris"): LCS 2, 2 * 2 / (2 + 3) = 0.8;
    # CTR 2 * 0.1 = 0.2; length: 2 words <= 6, 1 -> 0.2 * 1
    # 0.2 + 0.8 + 0.2 = 1.2
    assert math.isclose(query_reward("cheap flights", "cheap flights paris", 0.1, config), 1.2)
    # no reference at that slot: no ROUGE part, 0.2 + 0 + 0.2 = 0.4
    assert math.isclose(query_reward("cheap flights", None, 0.1, config), 0.4)
    # ROUGE-L("paris cheap flights", "cheap flights paris"): LCS "cheap flights", 2 words:
    # 2 * 2 / (3 + 3) = 0.667; CTR 2 * 0.9 = 1.8 -> beta 1; length 0.2: 1 + 0.667 + 0.2
    got = query_reward("paris cheap flights", "cheap flights paris", 0.9, config)
    assert math.isclose(got, 1 + 2 / 3 + 0.2)
    # 8 words: length (10 - 8) / 4 = 0.5; no word shared: ROUGE 0; CTR 0: 0.2 * 0.5 = 0.1
    long = "a b c d e f g h"
    assert math.isclose(query_reward(long, "cheap flights", 0.0, config), 0.1)
    assert query_reward(None, "cheap flights", 0.9, config) == 0.0  # no query: nothing


def test_slot_queries_match_lines_to_slots() -> None:
    config = RewardConfig(k=4)
    text = "<h1>\n1. Weather Channel\nweather channel!\n!!!\nmaps\n"
    queries, verdicts = slot_queries(text, SHOWN, config)
    # line 0: <h1> expands to the first shown history query;
    # line 1: the list marker goes, lowercased;
    # line 2: same words as line 1: a duplicate, its slot has no query;
    # line 3: no letter or digit: invalid; line 4 is past k = 4 (the trailing newline is no line)
    assert queries == ["paris hotels", "weather channel", None, None]
    assert verdicts == ["kept", "kept", "duplicate", "invalid", "kept"]


def test_slot_queries_pads_short_lists_and_handles_empty_text() -> None:
    config = RewardConfig(k=3)
    queries, verdicts = slot_queries("<h2>", SHOWN, config)
    assert queries == ["yahoo mail", None, None]
    assert verdicts == ["kept"]
    # a copy token beyond the shown history is a line validation drops
    queries, verdicts = slot_queries("<h9>\nmaps", SHOWN, config)
    assert queries == [None, "maps", None]
    assert verdicts == ["invalid", "kept"]
    # no text at all: no line, so no format credit either
    for empty in ("", "\n"):
        queries, verdicts = slot_queries(empty, SHOWN, config)
        assert queries == [None, None, None]
        assert verdicts == []
        assert format_reward(verdicts, config.k) == 0.0


def test_score_rollout_end_to_end() -> None:
    config = RewardConfig(k=3, gamma=2.0)
    references = ["cheap flights paris", "paris hotels", "car rental"]
    text = "cheap flights\n<h1>\nCheap Flights!\nhotel deals"
    queries, verdicts = slot_queries(text, SHOWN, config)
    assert queries == ["cheap flights", "paris hotels", None]
    assert verdicts == ["kept", "kept", "duplicate", "kept"]
    rollout = score_rollout(queries, verdicts, references, [0.1, 0.3, 0.9], config)
    # slot 0: CTR 2 * 0.1 = 0.2, ROUGE 2 * 2 / 5 = 0.8, length 0.2 * 1: 1.2
    # slot 1: CTR 2 * 0.3 = 0.6, ROUGE 1 (same query), length 0.2: 1.8
    # slot 2: a duplicate, no query: 0 (its p_ctr 0.9 is ignored)
    assert rollout.query == pytest.approx((1.2, 1.8, 0.0))
    # format: 3 good lines within k (kept, kept, duplicate) of 4 lines: 0.75;
    # repetition: 1 duplicate of 4 lines: -0.25; sequence 0.75 - 0.25 = 0.5
    assert math.isclose(rollout.sequence, 0.5)
    # total 1.2 + 1.8 + 0 + 0.5 = 3.5; query_max 1 * 1 + 1 + 0.2 = 2.2;
    # score (1.2 + 1.8 + 0) / (3 * 2.2) = 3 / 6.6 = 0.4545
    assert math.isclose(rollout.total, 3.5)
    assert math.isclose(config.query_max, 2.2)
    assert math.isclose(rollout.score(config), 3 / 6.6)
    assert rollout.queries == ("cheap flights", "paris hotels", None)


def test_score_rollout_without_a_reference_at_a_slot() -> None:
    config = RewardConfig(k=2)
    # one reference for two slots: slot 1 gets no ROUGE part
    rollout = score_rollout(["maps", "news"], ["kept", "kept"], ["maps"], [0.0, 0.0], config)
    # slot 0: 0 + 1 + 0.2 = 1.2; slot 1: 0 + 0 + 0.2 = 0.2; sequence: format 1, repetition 0
    assert rollout.query == pytest.approx((1.2, 0.2))
    assert rollout.sequence == 1.0


def test_bad_config_and_slot_counts() -> None:
    with pytest.raises(TrainingError):
        RewardConfig(k=0)
    with pytest.raises(TrainingError):
        RewardConfig(ideal_words=10, max_words=10)
    with pytest.raises(TrainingError):
        RewardConfig(w_ctr=0.0, w_rouge=0.0, w_length=0.0)
    with pytest.raises(TrainingError):
        score_rollout(["maps"], ["kept"], ["maps"], [0.1], RewardConfig(k=2))


def test_index_rouge_l_is_the_lcs_f_measure_of_the_index_sequences() -> None:
    assert index_rouge_l((2, 5), (2, 3)) == 0.5  # LCS (2,): 2 * 1 / (2 + 2)
    assert index_rouge_l((2, 5), (2, 5)) == 1.0
    assert index_rouge_l((5, 2), (2, 5)) == 0.5  # order counts: LCS of length 1
    assert math.isclose(index_rouge_l((1, 2, 3), (1, 3)), 0.8)  # LCS (1, 3): 2 * 2 / (3 + 2)
    assert index_rouge_l((1,), (4,)) == 0.0
    assert index_rouge_l((), (1,)) == 0.0


REFERENCE = "the user plans a trip\n<2><5>\nparis hotels\n<1>\nrunning shoes\n<3>\n<h1>"


def test_trigger_rewards_score_each_written_trigger_slot() -> None:
    # slot 0: <2><3> vs <2><5>: 0.5; slot 1: <1> vs <1>: 1; slot 2: not written: 0
    rollout = "a reason\n<2><3>\nhotels\n<1>\nshoes"
    assert trigger_rewards(rollout, REFERENCE, 5, shown=SHOWN) == [0.5, 1.0, 0.0]
    # slot 0 drops its pair (index 9 > 5 behaviours): 0 there, slot 1 is still slot 1;
    # slot 2 has a query line that is a copy of nothing (<h3>, two shown): dropped, 0
    dropped = "why\n<9>\nhotels\n<1><4>\nshoes\n<3>\n<h3>"
    # slot 1: <1><4> vs <1>: LCS 1, 2 * 1 / (2 + 1) = 0.667
    assert trigger_rewards(dropped, REFERENCE, 5, shown=SHOWN) == pytest.approx([0.0, 2 / 3, 0.0])
    # slots past the reference's get 0; fewer slots cut the list
    assert trigger_rewards(rollout, REFERENCE, 5, shown=SHOWN, slots=4) == [0.5, 1.0, 0.0, 0.0]
    assert trigger_rewards(rollout, REFERENCE, 5, shown=SHOWN, slots=1) == [0.5]
    assert trigger_rewards("", REFERENCE, 5, shown=SHOWN) == [0.0, 0.0, 0.0]
    with pytest.raises(TrainingError):
        trigger_rewards(rollout, REFERENCE, 5, slots=-1)
