"""The click simulator's pure core: examination, ROUGE-L, matching, decisions, the stateful
simulator (window, replacement, eviction, late exposures, reproducibility, counts)."""

from __future__ import annotations

import random

import pytest

from aigq.events import HintClickEvent, HintExposureEvent, ShownQuery
from streams.simulator import (
    ClickSimulator,
    SimulatorSettings,
    _lcs,
    decide,
    examination,
    match,
    rouge_l,
)

T = 1_700_000_000_000  # a plausible arrival time (ms)
WINDOW_MS = 60_000
# Every outcome an exposure can end in; with the pending ones they add up to the exposures.
OUTCOMES = (
    "clicks",
    "no_match",
    "not_examined",
    "expired",
    "replaced",
    "evicted",
    "already_decided",
)


def _settings(**overrides: float) -> SimulatorSettings:
    values: dict[str, float] = {"window_s": WINDOW_MS / 1000, "position_decay": 0.0}
    values.update(overrides)
    return SimulatorSettings(**values)  # type: ignore[arg-type]


def _exposure(user: str, request: str, *queries: str, ts: int = T) -> HintExposureEvent:
    shown = tuple(ShownQuery(query=q, source="u2q", position=i) for i, q in enumerate(queries))
    return HintExposureEvent(user_id=user, ts=ts, request_id=request, shown=shown)


def _balanced(sim: ClickSimulator) -> bool:
    return sim.counts["exposures"] == sum(sim.counts[k] for k in OUTCOMES) + sim.pending


# --- the pure functions ------------------------------------------------------------------------


def test_examination_is_the_inverse_position_to_the_decay() -> None:
    assert examination(0, 1.0) == 1.0
    assert examination(1, 1.0) == 0.5
    assert examination(3, 2.0) == 1 / 16
    assert examination(5, 0.0) == 1.0  # no position bias
    with pytest.raises(ValueError):
        examination(-1, 1.0)
    with pytest.raises(ValueError):
        examination(0, -0.5)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("running shoes", "Running  SHOES", 1.0),  # normalised first
        ("trail running shoes", "running shoes", 2 * 2 / (3 + 2)),
        ("a b c d", "b d", 2 * 2 / (4 + 2)),
        ("red shoes", "shoes red", 2 * 1 / (2 + 2)),  # order matters: LCS 1
        ("a b a", "b a b", 2 * 2 / (3 + 3)),
        ("x y", "z", 0.0),
        ("", "x", 0.0),
    ],
)
def test_rouge_l_is_the_word_lcs_f1(a: str, b: str, expected: float) -> None:
    assert rouge_l(a, b) == pytest.approx(expected)
    assert rouge_l(b, a) == pytest.approx(expected)


def _table_lcs(a: list[str], b: list[str]) -> int:
    """The textbook dynamic-programming table, to check the bit-parallel one against."""
    rows = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            rows[i + 1][j + 1] = rows[i][j] + 1 if x == y else max(rows[i][j + 1], rows[i + 1][j])
    return rows[-1][-1]


def test_bit_parallel_lcs_agrees_with_the_table() -> None:
    rng = random.Random(7)
    for _ in range(2_000):
        a = [rng.choice("abcd") for _ in range(rng.randint(0, 12))]
        b = [rng.choice("abcd") for _ in range(rng.randint(0, 12))]
        assert _lcs(a, b) == _table_lcs(a, b), (a, b)


def test_match_is_equality_or_rouge_above_the_threshold() -> None:
    assert match("Nike  AIR", "nike air", 1.0) == 1.0
    assert match("trail running shoes", "running shoes", 0.8) == pytest.approx(0.8)
    assert match("trail running shoes", "running shoes", 0.81) == 0.0
    assert match("red shoes", "shoes red", 1.0) == 0.0  # 1.0: equality only
    assert match("red shoes", "shoes red", 0.5) == 0.5


def test_decide_clicks_the_best_match_when_the_draw_is_under_its_examination() -> None:
    settings = SimulatorSettings(position_decay=1.0, rouge_threshold=0.6)
    exposure = _exposure("u1", "r1", "trail running shoes", "running shoes", "socks")
    best = exposure.shown[1]  # equal after normalisation (1.0) beats ROUGE-L 0.8 at position 0
    assert decide(exposure, "Running Shoes", settings, draw=0.49) == best
    assert decide(exposure, "Running Shoes", settings, draw=0.5) is None  # examined w.p. 1/2
    assert decide(exposure, "garden hose", settings, draw=0.0) is None  # no match at all


def test_decide_breaks_ties_by_the_lower_position() -> None:
    settings = SimulatorSettings(position_decay=1.0, rouge_threshold=0.6)
    shown = (
        ShownQuery(query="red shoes", source="x2q", position=2),
        ShownQuery(query="blue shoes", source="u2q", position=1),
    )
    exposure = HintExposureEvent(user_id="u1", ts=T, request_id="r1", shown=shown)
    # Both score 2 * 1 / (2 + 1) = 0.667 against "shoes": position 1 wins, examined w.p. 1/2.
    assert decide(exposure, "shoes", settings, draw=0.4) == shown[1]
    assert decide(exposure, "shoes", settings, draw=0.6) is None


# --- the stateful simulator --------------------------------------------------------------------


def test_a_matching_next_search_makes_one_click_naming_the_shown_hint() -> None:
    sim = ClickSimulator(_settings())
    sim.on_exposure(_exposure("u1", "r1", "nike air max", "running shoes"), T)
    click = sim.on_search("u1", "Running shoes", T + 5_000)
    assert click == HintClickEvent(
        user_id="u1",
        ts=T + 5_000,
        request_id="r1",
        query="running shoes",  # the shown text, not the search's
        source="u2q",
        position=1,
        event_id="sim:r1",
    )
    assert sim.on_search("u1", "running shoes", T + 6_000) is None  # one click per exposure
    assert (sim.counts["clicks"], sim.counts["no_exposure"], sim.pending) == (1, 1, 0)
    assert _balanced(sim)


def test_only_the_first_search_after_the_exposure_decides_it() -> None:
    sim = ClickSimulator(_settings())
    sim.on_exposure(_exposure("u1", "r1", "running shoes"), T)
    assert sim.on_search("u1", "running shoes", T) is None  # not after: it does not decide
    assert sim.pending == 1
    assert sim.on_search("u1", "garden hose", T + 1) is None  # decides it: no match
    assert sim.on_search("u1", "running shoes", T + 2) is None
    assert (sim.counts["no_match"], sim.counts["no_exposure"], sim.pending) == (1, 2, 0)
    assert _balanced(sim)


def test_the_window_is_inclusive_and_a_later_search_finds_the_exposure_expired() -> None:
    sim = ClickSimulator(_settings())
    sim.on_exposure(_exposure("u1", "r1", "running shoes"), T)
    assert sim.on_search("u1", "running shoes", T + WINDOW_MS) is not None
    sim.on_exposure(_exposure("u2", "r2", "running shoes"), T)
    assert sim.on_search("u2", "running shoes", T + WINDOW_MS + 1) is None
    assert (sim.counts["clicks"], sim.counts["expired"], sim.counts["no_exposure"]) == (1, 1, 1)
    assert _balanced(sim)


def test_expire_drops_exposures_older_than_the_window() -> None:
    sim = ClickSimulator(_settings())
    sim.on_exposure(_exposure("u1", "r1", "running shoes"), T)
    sim.on_exposure(_exposure("u2", "r2", "running shoes"), T + 10_000)
    assert sim.expire(T + WINDOW_MS) == 0  # u1's window ends at T + WINDOW_MS, inclusive
    assert sim.expire(T + WINDOW_MS + 1) == 1
    assert sim.pending == 1
    assert sim.on_search("u1", "running shoes", T + WINDOW_MS + 2) is None
    assert sim.on_search("u2", "running shoes", T + WINDOW_MS + 2) is not None
    assert (sim.counts["expired"], sim.counts["no_exposure"], sim.counts["clicks"]) == (1, 1, 1)
    assert _balanced(sim)


def test_a_newer_exposure_replaces_an_undecided_older_one() -> None:
    sim = ClickSimulator(_settings())
    sim.on_exposure(_exposure("u1", "r1", "running shoes"), T)
    sim.on_exposure(_exposure("u1", "r2", "garden hose"), T + 10)
    assert sim.on_search("u1", "running shoes", T + 20) is None  # r1 is gone: r2 has no match
    sim.on_exposure(_exposure("u1", "r3", "tents"), T + 30)
    sim.on_exposure(_exposure("u1", "r4", "sleeping bags"), T + 25)  # older, arrived later
    click = sim.on_search("u1", "tents", T + 40)
    assert click is not None and click.request_id == "r3"
    assert (sim.counts["replaced"], sim.counts["no_match"], sim.counts["clicks"]) == (2, 1, 1)
    assert _balanced(sim)


def test_pending_exposures_are_bounded_by_evicting_the_oldest() -> None:
    sim = ClickSimulator(_settings(), max_users=2)
    for i, user in enumerate(("u1", "u2", "u3")):
        sim.on_exposure(_exposure(user, f"r{i}", "running shoes"), T + i)
    assert (sim.pending, sim.counts["evicted"]) == (2, 1)
    assert sim.on_search("u1", "running shoes", T + 10) is None  # evicted
    assert sim.on_search("u3", "running shoes", T + 10) is not None
    assert sim.counts["no_exposure"] == 1
    assert _balanced(sim)


def test_kept_searches_are_bounded_too() -> None:
    sim = ClickSimulator(_settings(), max_users=2)
    for user in ("u1", "u2", "u3"):
        sim.on_search(user, "running shoes", T + 10)
    assert sim.counts["evicted_searches"] == 1
    # u1's search is forgotten: its late exposure waits for a search instead.
    assert sim.on_exposure(_exposure("u1", "r1", "running shoes"), T) is None
    assert sim.on_exposure(_exposure("u3", "r3", "running shoes"), T) is not None
    assert (sim.pending, sim.counts["clicks"]) == (1, 1)


def test_an_exposure_arriving_after_its_search_is_decided_at_once() -> None:
    sim = ClickSimulator(_settings())
    sim.on_search("u1", "hiking boots", T - 5_000)  # before the exposure: not its next search
    assert sim.on_search("u1", "running shoes", T + 300) is None  # no exposure yet
    sim.on_search("u1", "garden hose", T + 900)  # a second search: not the first after it
    click = sim.on_exposure(_exposure("u1", "r1", "tents", "running shoes"), T)
    assert click is not None
    assert (click.ts, click.request_id, click.position) == (T + 300, "r1", 1)
    assert sim.pending == 0
    assert _balanced(sim)


def test_a_late_exposure_whose_next_search_is_out_of_the_window_waits_and_expires() -> None:
    sim = ClickSimulator(_settings())
    sim.on_search("u1", "running shoes", T + WINDOW_MS + 1)
    assert sim.on_exposure(_exposure("u1", "r1", "running shoes"), T) is None
    assert sim.pending == 1
    assert sim.expire(T + WINDOW_MS + 1) == 1
    assert _balanced(sim)


def test_a_search_decides_one_exposure_at_most() -> None:
    sim = ClickSimulator(_settings())
    sim.on_exposure(_exposure("u1", "r1", "running shoes"), T)
    assert sim.on_search("u1", "running shoes", T + 100) is not None  # decides r1
    # r2 was shown between r1 and that search but arrived after it: the search is taken.
    assert sim.on_exposure(_exposure("u1", "r2", "running shoes"), T + 50) is None
    assert (sim.counts["clicks"], sim.counts["already_decided"], sim.pending) == (1, 1, 0)
    assert _balanced(sim)


def test_the_position_bias_draws_come_from_the_seeded_rng() -> None:
    # Seed 0's first draws are 0.844, 0.758, 0.421: against examination 1/2 (position 1,
    # decay 1) the first two are not examined, the third is clicked. A decision without a match
    # takes no draw.
    sim = ClickSimulator(_settings(position_decay=1.0, seed=0))
    for i in range(4):
        sim.on_exposure(_exposure(f"u{i}", f"r{i}", "tents", "running shoes"), T)
    clicks = [sim.on_search("u0", "garden hose", T + 1)]
    clicks += [sim.on_search(f"u{i}", "running shoes", T + 2) for i in (1, 2, 3)]
    assert [c.user_id if c else None for c in clicks] == [None, None, None, "u3"]
    counts = (sim.counts["no_match"], sim.counts["not_examined"], sim.counts["clicks"])
    assert counts == (1, 2, 1)
    assert _balanced(sim)


def test_the_same_inputs_and_seed_give_the_same_clicks() -> None:
    def run(seed: int) -> list[HintClickEvent | None]:
        sim = ClickSimulator(_settings(position_decay=1.5, seed=seed))
        out: list[HintClickEvent | None] = []
        for i in range(200):
            user = f"u{i % 37}"
            sim.on_exposure(_exposure(user, f"r{i}", "a b", "c d", "e f", ts=T), T + 10 * i)
            out.append(sim.on_search(user, ("a b", "c d", "e f")[i % 3], T + 10 * i + 5))
        return out

    first = run(3)
    assert first == run(3)
    assert any(first) and not all(first)


@pytest.mark.parametrize(
    "bad",
    [
        {"window_s": 0},
        {"window_s": 8 * 86_400},
        {"rouge_threshold": 0},
        {"rouge_threshold": 1.5},
        {"position_decay": -1},
        {"metrics_bind": "nowhere"},
    ],
)
def test_settings_are_bounded(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        SimulatorSettings(**bad)  # type: ignore[arg-type]
    assert SimulatorSettings().window_ms == 1_800_000
