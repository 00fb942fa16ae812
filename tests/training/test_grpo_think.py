"""IL-GRPO on AIGQ-Think (training/grpo_think.py, and the Think paths of grpo.py,
grpo_data.py and grpo_rollout.py) on hand-computed examples: which lines a Think rollout's
query slots are scored on, its trigger rewards, the RL prompt of a Think sample, and the
zero-padded trigger tensor and its advantages."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from generators.think import think_prompt_for
from training import TrainingError
from training.ctr_data import UserContext
from training.grpo import GRPOConfig, batch_advantages, score_texts, step_figures
from training.grpo_data import GrpoPrompt, think_grpo_prompt
from training.grpo_math import think_token_advantages
from training.grpo_rewards import RewardConfig, Rollout
from training.grpo_rollout import Batch, Sampling, rollout
from training.grpo_think import mean_trigger_reward, query_lines, trigger_rows, trigger_tensor
from training.samples import Context, Sample

EPS = 1e-4
SHOWN = ("yahoo mail",)  # the prompt's history query: <h1>
REFERENCE = "reason\n<2><5>\nparis hotels\n<1>\nrunning shoes\n<h1>"


def _think(reference: str = REFERENCE, references: tuple[str, ...] = ()) -> GrpoPrompt:
    user = UserContext("u1", 60_000, (), "", 0, SHOWN)
    refs = references or ("paris hotels", "running shoes", "yahoo mail")
    return GrpoPrompt("Think, then recommend 3 queries.", SHOWN, refs, user, (), reference, 5)


def test_query_lines_are_the_lines_after_a_trigger_line() -> None:
    text = "a trip\n<2><3>\nparis hotels\ncheap hotels\n\n<1>\n<h1>"
    # the rationale, the trigger lines and the blank line go; the copy token stays for the
    # reward to expand
    assert query_lines(text) == "paris hotels\ncheap hotels\n<h1>"
    # a line before any trigger line is in no pair, so in no slot; no trigger line: no query
    assert query_lines("why\nstray\n<4>\nmaps") == "maps"
    assert query_lines("why\nmaps\nnews") == ""
    assert query_lines("") == ""


def test_a_think_rollout_is_scored_on_its_query_lines_and_its_trigger_sets() -> None:
    config = GRPOConfig(rewards=RewardConfig(k=3))  # no CTR model: the CTR part is 0
    text = "a trip\n<2><3>\nparis hotels\ncheap hotels\n\n<1>\n<h1>"
    [got] = score_texts([text], [_think()], config, None)
    # query slot 0: "paris hotels" = reference 0: ROUGE 1 + length 0.2 * 1 = 1.2
    # query slot 1: "cheap hotels" vs "running shoes": ROUGE 0 + length 0.2 = 0.2
    # query slot 2: <h1> = "yahoo mail" = reference 2: 1.2
    assert got.query == pytest.approx((1.2, 0.2, 1.2))
    assert got.queries == ("paris hotels", "cheap hotels", "yahoo mail")
    # sequence: 3 well-formed query lines of 3 (format 1), no repeat (0): 1
    assert got.sequence == 1.0
    # trigger slot 0: <2><3> vs <2><5>: LCS 1, 2 * 1 / (2 + 2) = 0.5; slot 1: <1> vs <1>: 1
    assert got.trigger == pytest.approx((0.5, 1.0))
    # total: 2.6 + 1 + 1.5 = 5.1 (plain GRPO is paid for the triggers too);
    # score: queries only, 2.6 / (3 * 2.2) = 0.394
    assert math.isclose(got.total, 5.1)
    assert math.isclose(got.score(config.rewards), 2.6 / 6.6)
    # the same text as a Direct rollout: line j is slot j, the rationale is slot 0
    direct = GrpoPrompt("p", SHOWN, _think().references, _think().user, ())
    [plain] = score_texts([text], [direct], config, None)
    assert plain.trigger is None and plain.queries[0] == "a trip"


def test_a_think_rollout_that_writes_no_pair_scores_zero_slots() -> None:
    config = GRPOConfig(rewards=RewardConfig(k=3))
    [got] = score_texts(["just some words"], [_think()], config, None)
    assert got.query == (0.0, 0.0, 0.0)
    assert got.sequence == 0.0  # no query line: no format credit
    assert got.trigger == (0.0, 0.0)  # the reference's two trigger slots, neither written


HOUR = 3_600_000
NOW = 1_767_225_600_000 + 9 * HOUR


def _context(recent: tuple[tuple[int, str, str, str], ...]) -> Context:
    return Context(
        user_id="u1", cut_ms=NOW + 1, recent=recent, profile=(), searches=("running shoes",),
        version=4, fingerprint="fp", last_ts=NOW, history=("yahoo mail",),
    )  # fmt: skip


TRIP_AND_SHOES = _context(
    (
        (NOW - 72 * HOUR, "search", "cheap flights paris", ""),  # <4>
        (NOW - 2 * HOUR, "click", "http://www.expedia.com/hotels/paris-deals", ""),  # <3>
        (NOW - 1 * HOUR, "search", "running shoes", ""),  # <2>
        (NOW, "click", "Nike Pegasus 40", "Sports>Running Shoes"),  # <1>
    )
)


def test_a_think_sample_becomes_a_prompt_with_its_reference_target() -> None:
    labels = ("Paris hotels", "yahoo mail", "trail running shoes", "weather today")
    prompt = think_grpo_prompt(Sample("think", TRIP_AND_SHOES, labels, None), k=10)
    assert prompt.is_think and prompt.behaviours == 4
    assert prompt.prompt == think_prompt_for(TRIP_AND_SHOES.request(), 10)
    # "paris hotels" shares "paris" with <4> and <3>; the other labels share nothing with
    # "hotels" or the trip, "trail running shoes" shares with <1> and <2>, and the two that
    # share nothing go with the newest two behaviours, <1><2>; "yahoo mail" is <h1>
    assert prompt.think_reference == (
        "the reference\n<3><4>\nparis hotels\n<1><2>\n<h1>\ntrail running shoes\nweather today"
    )
    # the query slots: the reference's query lines in order, copies expanded
    assert prompt.references == ("paris hotels", "yahoo mail", "trail running shoes",
                                 "weather today")  # fmt: skip
    assert prompt.shown == ("yahoo mail",) and prompt.user.last_search == "running shoes"
    # no behaviour shown: no pair, so no reference query (the CLI drops it), still Think
    bare = think_grpo_prompt(Sample("think", _context(()), labels, None))
    assert bare.is_think and bare.references == () and bare.behaviours == 0
    direct = GrpoPrompt("p", (), ("a",), prompt.user, ())
    assert not direct.is_think


def test_the_trigger_tensor_is_zero_padded_and_padded_slots_get_the_sequence_part() -> None:
    # P = 2, G = 2: prompt 0 has two trigger slots, prompt 1 one
    rollouts = [
        Rollout((0.0,), 0.0, trigger=(0.0, 1.0)),
        Rollout((0.0,), 0.0, trigger=(1.0, 1.0)),
        Rollout((0.0,), 0.0, trigger=(0.0,)),
        Rollout((0.0,), 0.0, trigger=(1.0,)),
    ]
    rewards, widths = trigger_tensor(rollouts, group=2)
    assert rewards.tolist() == [[[0.0, 1.0], [1.0, 1.0]], [[0.0, 0.0], [1.0, 0.0]]]
    assert widths.tolist() == [2, 1]
    rest = torch.tensor([[0.3, -0.3], [0.1, -0.1]])
    # slot 0 of either prompt: rewards [0, 1], mean 0.5, population std 0.5: -+0.5 / 0.5
    # prompt 0 slot 1: [1, 1], a tie: 0; prompt 1 slot 1 is padding: its rows' rest
    z = 0.5 / (0.5 + EPS)
    expected = torch.tensor([[-z, 0.0], [z, 0.0], [-z, 0.1], [z, -0.1]])
    rows = trigger_rows(rollouts, rest)
    assert_close(rows, expected)
    # so a trigger line past its prompt's slots gets the sequence part whether the batch is
    # wider (slot 1, padding) or not (slot 2, past K_t)
    slots = torch.tensor([[0, 1, 2]])
    got = think_token_advantages(rows[2:3], torch.zeros((1, 1)), rest[1, :1], slots,
                                 torch.full((1, 3), -1))  # fmt: skip
    assert_close(got, torch.tensor([[-z, 0.1, 0.1]]))
    with pytest.raises(TrainingError, match="different trigger slot counts"):
        trigger_tensor([rollouts[0], rollouts[2]], group=2)
    with pytest.raises(TrainingError, match="groups of 2"):
        trigger_tensor(rollouts[:3], group=2)
    # a batch with no trigger slot at all: [P, G, 0]
    none = [Rollout((0.0,), 0.0, trigger=())] * 2
    assert trigger_tensor(none, group=2)[0].shape == (1, 2, 0)
    assert trigger_rows(none, rest[:1]).shape == (2, 0)


def test_a_think_batch_gives_trigger_query_and_other_tokens_their_advantage() -> None:
    # one prompt, G = 2, K = 1 query slot, one trigger slot; trigger rewards 0 and 1
    rollouts = [Rollout((0.0,), 0.0, trigger=(0.0,)), Rollout((0.0,), 0.0, trigger=(1.0,))]
    slot_adv = torch.tensor([[[0.5], [-0.5]]])
    rest = torch.tensor([[0.2, -0.2]])
    completion = torch.zeros((2, 4), dtype=torch.long)
    # tokens: rationale, trigger 0, query 0, the end (query slot 1: past K)
    queries = torch.tensor([[-1, -1, 0, 1]] * 2)
    triggers = torch.tensor([[-1, 0, -1, -1]] * 2)
    batch = Batch(completion, completion, completion, completion, ["", ""], queries, triggers)
    z = 0.5 / (0.5 + EPS)
    got = batch_advantages(batch, rollouts, torch.tensor([0, 1]), slot_adv, rest, GRPOConfig())
    assert_close(got, torch.tensor([[0.2, -z, 0.5, 0.2], [-0.2, z, -0.5, -0.2]]))
    # the difficulty filter kept only row 1: its advantages alone
    one = batch_advantages(batch, rollouts, torch.tensor([1]), slot_adv, rest, GRPOConfig())
    assert_close(one, got[1:])


def test_the_curve_records_the_trigger_reward_of_think_batches_only() -> None:
    think = [
        Rollout((1.0,), 0.0, trigger=(0.5, 1.0)),  # mean 0.75
        Rollout((1.0,), 0.0, trigger=()),  # a reference with no pair: 0
    ]
    assert mean_trigger_reward(think) == 0.375  # (0.75 + 0) / 2
    keep = torch.tensor([True])
    config = GRPOConfig(rewards=RewardConfig(k=1))
    assert step_figures(think, keep, config)["trigger_reward"] == 0.375
    direct = [Rollout((1.0,), 0.0)]
    assert mean_trigger_reward(direct) is None
    assert "trigger_reward" not in step_figures(direct, keep, config)


def test_a_batch_is_all_direct_or_all_think() -> None:
    direct = GrpoPrompt("p", SHOWN, ("a",), _think().user, ())
    sampling = Sampling(2, 1.0, 0, 4, 16)
    with pytest.raises(TrainingError, match="mixes Direct and Think"):
        rollout(None, None, [direct, _think()], sampling, None)  # type: ignore[arg-type]
