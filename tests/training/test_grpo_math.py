"""IL-GRPO's arithmetic on hand-computed examples: per-slot advantages (population std over
the G rollouts at each slot, plus lam times the group-normalised sequence reward, clipped),
token slots, entropy-adaptive clip ranges, the clipped surrogate, the entropy weight's decay
and the difficulty filter."""

from __future__ import annotations

import math

import torch
from torch.testing import assert_close

from training.grpo_math import (
    advantages,
    clip_eps,
    clipped_loss,
    entropy_weight,
    keep_prompts,
    sequence_advantages,
    think_token_advantages,
    think_token_slots,
    token_advantages,
    token_slots,
    trigger_advantages,
)

EPS = 1e-4  # the functions' default: std + eps in every denominator

# Population standard deviations (divide by G = 3) of the groups used below:
# [0, 1, 2]: mean 1, deviations -1, 0, 1, variance (1 + 0 + 1) / 3 = 2/3
SD_012 = math.sqrt(2 / 3)  # 0.8165
# [0, 0, 3] (or [3, 3, 0] or [0, 10, 10] / 10 * 3 ...): mean 1, deviations -1, -1, 2,
# variance (1 + 1 + 4) / 3 = 2
SD_003 = math.sqrt(2)  # 1.4142


def _z(deviation: float, std: float) -> float:
    """One normalised reward, as the module computes it: (r - mean) / (std + eps)."""
    return deviation / (std + EPS)


def test_advantages_per_slot_with_a_tie_and_the_clip() -> None:
    lam = 0.5
    query = torch.tensor(
        [
            # prompt 0: slot 0 is [0, 1, 2], slot 1 ties at 1, slot 2 is [0, 0, 3]
            [[0.0, 1.0, 0.0], [1.0, 1.0, 0.0], [2.0, 1.0, 3.0]],
            # prompt 1: slot 0 is [3, 3, 0], slot 1 ties at 0, slot 2 is [0, 0, 3]
            [[3.0, 0.0, 0.0], [3.0, 0.0, 0.0], [0.0, 0.0, 3.0]],
        ]
    )
    sequence = torch.tensor([[0.0, 1.0, 2.0], [1.0, 1.0, 0.0]])
    # Sequence parts, lam * z:
    # prompt 0, [0, 1, 2]: 0.5 * (-1, 0, 1) / 0.8165 = -0.6124, 0, 0.6124
    s0 = [lam * _z(-1, SD_012), 0.0, lam * _z(1, SD_012)]
    # prompt 1, [1, 1, 0]: mean 2/3, deviations 1/3, 1/3, -2/3,
    # variance (1/9 + 1/9 + 4/9) / 3 = 2/9, std 0.4714: 0.5 * (0.7071, 0.7071, -1.4142)
    sd_110 = math.sqrt(2 / 9)
    s1 = [lam * _z(1 / 3, sd_110), lam * _z(1 / 3, sd_110), lam * _z(-2 / 3, sd_110)]
    expected = torch.tensor(
        [
            [
                # slot 0: -1.2247 - 0.6124 = -1.8371; slot 1 (tie): sequence part alone;
                # slot 2: -0.7071 - 0.6124 = -1.3195
                [_z(-1, SD_012) + s0[0], s0[0], _z(-1, SD_003) + s0[0]],
                # the middle rollout: z 0 at slots 0 and 1, -0.7071 at slot 2, sequence part 0
                [0.0, 0.0, _z(-1, SD_003)],
                # slot 0: 1.2247 + 0.6124 = 1.8371; slot 2: 1.4142 + 0.6124 = 2.0266 -> clip 2
                [_z(1, SD_012) + s0[2], s0[2], 2.0],
            ],
            [
                # slot 0: 0.7071 + 0.3536 = 1.0607; slot 2: -0.7071 + 0.3536 = -0.3536
                [_z(1, SD_003) + s1[0], s1[0], _z(-1, SD_003) + s1[0]],
                [_z(1, SD_003) + s1[1], s1[1], _z(-1, SD_003) + s1[1]],
                # slot 0: -1.4142 - 0.7071 = -2.1213 -> clip -2; slot 2: 1.4142 - 0.7071
                [-2.0, s1[2], _z(2, SD_003) + s1[2]],
            ],
        ]
    )
    slot, rest = advantages(query, sequence, lam=lam)
    assert_close(slot, expected)
    assert_close(rest, torch.tensor([s0, s1]))
    assert slot[0, 2, 2].item() == 2.0 and slot[1, 2, 0].item() == -2.0


def test_rewards_are_clipped_to_ten_before_normalising() -> None:
    lam = 0.5
    # one prompt, three rollouts, one slot: [0, 10, 50] behaves as [0, 10, 10]:
    # mean 20/3, deviations -20/3, 10/3, 10/3, std 10 * sqrt(2) / 3 = 4.714,
    # z = -1.4142, 0.7071, 0.7071 (unclipped, [0, 10, 50] would give -0.93, -0.46, 1.39)
    query = torch.tensor([[[0.0], [10.0], [50.0]]])
    # sequence [-50, -10, 0] behaves as [-10, -10, 0]: z = -0.7071, -0.7071, 1.4142
    sequence = torch.tensor([[-50.0, -10.0, 0.0]])
    sd = 10 * SD_003 / 3
    q = [_z(-20 / 3, sd), _z(10 / 3, sd), _z(10 / 3, sd)]
    s = [lam * _z(-10 / 3, sd), lam * _z(-10 / 3, sd), lam * _z(20 / 3, sd)]
    slot, rest = advantages(query, sequence, lam=lam)
    # -1.4142 - 0.3536 = -1.7678; 0.7071 - 0.3536 = 0.3536; 0.7071 + 0.7071 = 1.4142
    assert_close(slot, torch.tensor([[[q[0] + s[0]], [q[1] + s[1]], [q[2] + s[2]]]]))
    assert_close(rest, torch.tensor([s]))
    same_slot, same_rest = advantages(
        torch.tensor([[[0.0], [10.0], [10.0]]]), torch.tensor([[-10.0, -10.0, 0.0]]), lam=lam
    )
    assert_close(slot, same_slot)
    assert_close(rest, same_rest)


def test_sequence_advantages_is_plain_grpo() -> None:
    # [0, 0, 2, 2]: mean 1, deviations -1, -1, 1, 1, variance 1, std 1;
    # [5, 5, 5, 5] ties: 0 / (0 + eps) = 0
    totals = torch.tensor([[0.0, 0.0, 2.0, 2.0], [5.0, 5.0, 5.0, 5.0]])
    one = 1 / (1 + EPS)
    assert_close(sequence_advantages(totals), torch.tensor([[-one, -one, one, one], [0.0] * 4]))
    # eight 0s and one 9: mean 1, variance (8 * 1 + 64) / 9 = 8, std 2.8284;
    # 8 / 2.8284 = 2.83 -> clip 2, -1 / 2.8284 = -0.3536
    loud = torch.tensor([[0.0] * 8 + [9.0]])
    low = -1 / (math.sqrt(8) + EPS)
    assert_close(sequence_advantages(loud), torch.tensor([[low] * 8 + [2.0]]))


def test_token_slots_count_the_newlines_before_each_token() -> None:
    pieces = ["<h1>", "\n", " weather", " channel", "\n", "<|endoftext|>"]
    # the first newline ends line 0; the second ends line 1; the end token starts line 2
    assert token_slots(pieces) == [0, 0, 1, 1, 1, 2]
    # a token with two newlines moves two lines on
    assert token_slots(["a", "\n\n", "b", ".\n", "c"]) == [0, 0, 2, 2, 3]
    assert token_slots([]) == []


def test_token_advantages_pick_the_slot_or_the_sequence_part() -> None:
    slot_adv = torch.tensor([[1.0, -1.0], [0.5, 0.25]])  # N = 2 rollouts, K = 2 slots
    rest = torch.tensor([7.0, -7.0])
    slots = torch.tensor([[0, 0, 1, 1, 2, 3], [0, 1, 1, 1, 1, 1]])
    # rollout 0: slot 0, 0, 1, 1, then slots 2 and 3 are past K = 2: the sequence part, 7
    expected = torch.tensor([[1.0, 1.0, -1.0, -1.0, 7.0, 7.0], [0.5, 0.25, 0.25, 0.25, 0.25, 0.25]])
    assert_close(token_advantages(slot_adv, rest, slots), expected)


def test_clip_eps_widens_the_high_entropy_tokens_of_the_mask() -> None:
    entropy = torch.tensor([[0.5, 4.0, 1.0, 100.0], [5.0, 2.0, 200.0, 3.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 1]])
    # masked entropies sorted: 0.5, 1, 2, 3, 4, 5; the 80th percentile (linear) sits at
    # index 0.8 * (6 - 1) = 4: exactly 4.0, so 4.0 (at) and 5.0 (above) get eps_high.
    # Counting the masked-out 100 and 200 would move it to index 0.8 * 7 = 5.6:
    # 5 + 0.6 * (100 - 5) = 62, and no masked token would get eps_high.
    eps = clip_eps(entropy, mask, eps_low=0.2, eps_high=0.28)
    on = mask.bool()
    expected = torch.tensor([[0.2, 0.28, 0.2, 0.0], [0.28, 0.2, 0.0, 0.2]])
    assert_close(eps[on], expected[on])
    # no token in the mask: every token gets eps_low
    empty = clip_eps(entropy, torch.zeros_like(mask), eps_low=0.2, eps_high=0.28)
    assert_close(empty, torch.full_like(entropy, 0.2))


def test_clipped_loss_on_hand_picked_ratios() -> None:
    ratio = torch.tensor([[1.5, 0.5, 0.5, 1.5, 1.25, 3.0]])
    adv = torch.tensor([[1.0, -1.0, 1.0, -2.0, 2.0, 5.0]])
    eps = torch.tensor([[0.2, 0.2, 0.2, 0.2, 0.28, 0.2]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 0]])
    # min(r A, clip(r, 1 - eps, 1 + eps) A) per token:
    # 1: A = +1, r = 1.5 > 1.2: min(1.5, 1.2) = 1.2 (clipped)
    # 2: A = -1, r = 0.5 < 0.8: min(-0.5, -0.8) = -0.8 (clipped)
    # 3: A = +1, r = 0.5: min(0.5, 0.8) = 0.5 (the pessimistic side: not clipped)
    # 4: A = -2, r = 1.5: min(-3.0, -2.4) = -3.0 (not clipped)
    # 5: A = +2, r = 1.25 inside its wider 1 +- 0.28: 2.5 (not clipped)
    # 6: masked out (A = 5, r = 3 would weigh a lot)
    # loss = -(1.2 - 0.8 + 0.5 - 3.0 + 2.5) / 5 = -0.4 / 5 = -0.08; bound share 2 / 5 = 0.4
    logp = torch.log(ratio)
    loss, bound = clipped_loss(logp, torch.zeros_like(logp), adv, eps, mask)
    assert_close(loss, torch.tensor(-0.08))
    assert_close(bound, torch.tensor(0.4))


def test_entropy_weight_decays_linearly_to_zero() -> None:
    # start 0.01 over 100 steps: 0.01 * (1 - step / 100)
    assert entropy_weight(0, 100, 0.01) == 0.01
    assert math.isclose(entropy_weight(50, 100, 0.01), 0.005)  # 0.01 * 0.5
    assert math.isclose(entropy_weight(75, 100, 0.01), 0.0025)  # 0.01 * 0.25
    assert entropy_weight(100, 100, 0.01) == 0.0
    assert entropy_weight(150, 100, 0.01) == 0.0  # past the end: stays 0, never negative
    assert entropy_weight(3, 0, 0.01) == 0.0  # no schedule


def test_keep_prompts_keeps_the_inclusive_middle() -> None:
    # two rollouts each; means 0.05, 0.1, 0.5, 0.95, 0.99 (exact in float32: 0.2 / 2 = 0.1)
    scores = torch.tensor([[0.0, 0.1], [0.0, 0.2], [0.0, 1.0], [0.95, 0.95], [0.98, 1.0]])
    # [0.1, 0.95] with both bounds inclusive: 0.05 and 0.99 go
    assert keep_prompts(scores).tolist() == [False, True, True, True, False]
    # all solved or all hopeless prompts carry no signal
    assert keep_prompts(torch.tensor([[1.0, 1.0], [0.0, 0.0]])).tolist() == [False, False]
    assert keep_prompts(scores, low=0.0, high=0.5).tolist() == [True, True, True, False, False]


def test_trigger_advantages_normalise_each_trigger_slot_over_the_group() -> None:
    # P = 1, G = 3, K_t = 2: slot 0 rewards [0, 0.5, 1] (mean 0.5, population std
    # sqrt(1/6) = 0.408); slot 1 all 1: advantage 0 (a tie gives no signal)
    rewards = torch.tensor([[[0.0, 1.0], [0.5, 1.0], [1.0, 1.0]]])
    sd = math.sqrt(1 / 6)
    expected = torch.tensor([[[_z(-0.5, sd), 0.0], [0.0, 0.0], [_z(0.5, sd), 0.0]]])
    assert_close(trigger_advantages(rewards), expected)


def test_think_token_slots_tell_rationale_trigger_and_query_tokens_apart() -> None:
    pieces = [
        "why",
        " so",
        "\n",
        "<2>",
        "<5>",
        "\n",
        " hotels",
        "\n",
        "<1>",
        "\n",
        " shoes",
        "\n",
        " socks",
    ]
    triggers, queries = think_token_slots(pieces)
    # rationale: none; "<2><5>\n": trigger 0; " hotels\n": query 0; "<1>\n": trigger 1;
    # " shoes\n": query 1; " socks": query 2
    assert triggers == [-1, -1, -1, 0, 0, 0, -1, -1, 1, 1, -1, -1, -1]
    assert queries == [-1, -1, -1, -1, -1, -1, 0, 0, -1, -1, 1, 1, 2]
    # the end token belongs to the query slot it leaves empty; a line before any trigger
    # line, and blank lines, are in no slot
    triggers, queries = think_token_slots(
        ["why", "\n", "stray", "\n", "<1>", "\n", "\n", "a", "<eos>"], ended=True
    )
    assert triggers == [-1, -1, -1, -1, 0, 0, -1, -1, -1]
    assert queries == [-1, -1, -1, -1, -1, -1, -1, 0, 1]
    assert think_token_slots([]) == ([], [])


def test_think_token_advantages_pick_trigger_query_or_the_sequence_part() -> None:
    trigger_adv = torch.tensor([[0.3]])  # N = 1, K_t = 1
    slot_adv = torch.tensor([[1.0, -1.0]])  # K = 2
    rest = torch.tensor([7.0])
    triggers = torch.tensor([[-1, 0, -1, -1, 1, -1]])  # trigger slot 1 is past K_t: rest
    queries = torch.tensor([[-1, -1, 0, 1, -1, 2]])  # query slot 2 is past K: rest
    expected = torch.tensor([[7.0, 0.3, 1.0, -1.0, 7.0, 7.0]])
    assert_close(think_token_advantages(trigger_adv, slot_adv, rest, triggers, queries), expected)
    no_triggers = torch.zeros((1, 0))
    assert_close(
        think_token_advantages(no_triggers, slot_adv, rest, triggers, queries),
        torch.tensor([[7.0, 7.0, 1.0, -1.0, 7.0, 7.0]]),
    )
