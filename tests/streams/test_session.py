"""Session state and the trigger policy: pure functions over plain events."""

from __future__ import annotations

import pytest

from streams.session import (
    Session,
    SessionConfig,
    apply_event,
    cosine_distance,
    features,
    fingerprint,
    top_features,
)
from streams.triggers import CostGovernor, TriggerPolicy, govern, is_novel_query, step

T0 = 1_767_225_600_000
MIN = 60_000
HOUR = 60 * MIN
CONFIG = SessionConfig(max_recent=5, window_ms=2 * HOUR, half_life_ms=HOUR)
POLICY = TriggerPolicy(debounce_ms=MIN, stale_after_ms=3 * HOUR, drift_threshold=0.6)


def _search(session: Session, ts: int, query: str) -> str:
    return step(session, CONFIG, POLICY, "search", ts, query, ()).outcome


def _click(session: Session, ts: int, text: str, *category: str) -> str:
    return step(session, CONFIG, POLICY, "click", ts, text, category).outcome


def test_version_counts_and_recent_window() -> None:
    session = Session("u")
    for i in range(8):
        apply_event(session, CONFIG, "search", T0 + i * MIN, f"query {i}", ())
    apply_event(session, CONFIG, "hint_exposure", T0 + 9 * MIN, "", ())
    assert session.version == 9
    assert session.counts == {"search": 8, "hint_exposure": 1}
    assert [b[2] for b in session.recent] == [f"query {i}" for i in range(3, 8)]  # last 5
    apply_event(session, CONFIG, "click", T0 + 3 * HOUR, "lamp", ("Home", "Lighting"))
    assert [b[2] for b in session.recent] == ["lamp"]  # the others left the 2 h window
    assert session.recent[0][3] == "Home>Lighting"


def test_out_of_order_behaviours_stay_in_time_order() -> None:
    session = Session("u")
    for ts in (T0 + 2 * MIN, T0, T0 + MIN):
        apply_event(session, CONFIG, "search", ts, f"q{ts}", ())
    assert [b[0] for b in session.recent] == [T0, T0 + MIN, T0 + 2 * MIN]
    assert session.last_ts == T0 + 2 * MIN


def test_profile_decays_with_the_half_life() -> None:
    session = Session("u")
    apply_event(session, CONFIG, "search", T0, "lamp", ())
    apply_event(session, CONFIG, "search", T0 + HOUR, "bike", ())
    weights = dict(top_features(session.profile, 10))
    assert weights["t:bike"] == pytest.approx(2 * weights["t:lamp"])  # one half-life later


def test_profile_rescales_instead_of_overflowing() -> None:
    session = Session("u")
    apply_event(session, CONFIG, "search", T0, "lamp", ())
    apply_event(session, CONFIG, "search", T0 + 60 * HOUR, "bike lamp", ())  # 2**60 scale
    assert session.profile_ts == T0 + 60 * HOUR
    assert max(session.profile.values()) < 10
    # The first lamp is 60 half-lives old: it adds nothing that a float can still tell apart.
    assert dict(top_features(session.profile, 2)) == {"t:bike": 0.5, "t:lamp": 0.5}


def test_profile_is_pruned_to_the_strongest_features() -> None:
    config = SessionConfig(max_features=4, snapshot_features=2)
    session = Session("u")
    for i in range(10):
        apply_event(session, config, "search", T0 + i, f"word{i} common", ())
    assert len(session.profile) <= 6
    assert top_features(session.profile, 1)[0][0] == "t:common"


def test_features_of_searches_and_clicks() -> None:
    assert features("search", "The Running Shoes of 2006", ()) == {
        "t:running": 1.0,
        "t:shoes": 1.0,
    }
    clicked = features("click", "Nike trail", ("Sports", "Running"))
    assert clicked == {"t:nike": 0.3, "t:trail": 0.3, "c:sports": 0.5, "c:running": 1.0}


def test_session_round_trips_through_bytes() -> None:
    session = Session("ü")
    step(session, CONFIG, POLICY, "click", T0, "lamp", ("Home", "Lighting"))
    assert Session.from_bytes(session.to_bytes()) == session


def test_cosine_and_fingerprint() -> None:
    assert cosine_distance({}, {"a": 1.0}) == 1.0
    assert cosine_distance({"a": 1.0}, {"a": 5.0}) == pytest.approx(0.0)
    assert cosine_distance({"a": 1.0}, {"b": 1.0}) == pytest.approx(1.0)
    assert fingerprint({"a": 0.5, "b": 0.5}) == fingerprint({"b": 0.2, "a": 0.8})
    assert fingerprint({"a": 1.0}) != fingerprint({"b": 1.0})


@pytest.mark.parametrize(
    ("query", "novel"),
    [
        ("cheap running shoes", False),
        ("Running Shoes cheap!", False),
        ("yoga mat", True),
        ("", False),
    ],
)
def test_near_duplicate_queries(query: str, novel: bool) -> None:
    recent = [[T0, "search", "cheap running shoes", ""], [T0, "click", "yoga mat", "Yoga"]]
    assert is_novel_query(query, recent, near_duplicate=0.6) is novel


def test_the_trigger_rule_reason_by_reason() -> None:
    session = Session("u")
    assert _search(session, T0, "running shoes") == "cold_start"
    assert _search(session, T0 + 10_000, "yoga mat") == "debounced"  # novel, but within 1 min
    assert _search(session, T0 + 2 * MIN, "running shoes") == "no_signal"  # a repeat
    assert _click(session, T0 + 3 * MIN, "Hoka trail", "Sports", "Running") == "new_category"
    assert _click(session, T0 + 4 * MIN, "Asics", "Sports", "Running") == "no_signal"
    assert _search(session, T0 + 5 * MIN, "running shorts") == "novel_search"
    # Hours later, a repeat search by an active user refreshes a stale list.
    last = session.trigger_ts
    assert last is not None
    assert _search(session, last + 3 * HOUR, "running shorts") == "stale"


def test_drift_catches_a_shift_that_no_single_event_signals() -> None:
    session = Session("u")
    assert _search(session, T0, "running shoes") == "cold_start"
    assert _search(session, T0 + 10_000, "cast iron pan") == "debounced"  # novel, too early
    # From now on only repeats: never novel, but the profile turns to the kitchen.
    outcomes = [_search(session, T0 + (2 + 2 * i) * MIN, "cast iron pan") for i in range(5)]
    assert outcomes.count("drift") == 1
    assert set(outcomes) == {"drift", "no_signal"}
    fired = step(session, CONFIG, POLICY, "search", T0 + 20 * MIN, "cast iron pan", ())
    assert (fired.outcome, fired.shift < 0.6) == ("no_signal", True)  # measured from the drift


def test_exposures_never_trigger_but_count() -> None:
    session = Session("u")
    decision = step(session, CONFIG, POLICY, "hint_exposure", T0, "", ())
    assert (decision.outcome, decision.fired, session.version) == ("no_signal", False, 1)
    assert session.trigger_ts is None


def test_same_events_same_decisions() -> None:
    events = [("search", T0 + i * 20_000, f"q{i % 4} shoes", ()) for i in range(40)]
    runs = []
    for _ in range(2):
        session = Session("u")
        runs.append([step(session, CONFIG, POLICY, *e).outcome for e in events])  # type: ignore[arg-type]
    assert runs[0] == runs[1]


def test_govern_keeps_the_largest_shifts_in_their_order() -> None:
    items = [("a", 0.1), ("b", 0.9), ("c", 0.5), ("d", 0.9)]
    kept, dropped = govern(items, 2, lambda x: x[1])
    assert kept == [("b", 0.9), ("d", 0.9)]
    assert dropped == [("a", 0.1), ("c", 0.5)]
    assert govern(items, 10, lambda x: x[1]) == (items, [])


def test_governor_refills_at_its_rate_up_to_the_burst() -> None:
    now = [0.0]
    governor = CostGovernor(rate_per_s=2, burst=4, clock=lambda: now[0])
    assert governor.grant(10) == 4
    assert governor.grant(10) == 0
    now[0] = 1.0  # two tokens back
    assert governor.grant(10) == 2
    now[0] = 100.0  # never more than the burst
    assert governor.grant(1) == 1 and governor.grant(10) == 3
    assert CostGovernor(0).grant(10) == 10


@pytest.mark.parametrize(
    ("cls", "fields"),
    [
        (SessionConfig, {"max_recent": 0}),
        (SessionConfig, {"snapshot_features": 100}),
        (TriggerPolicy, {"drift_threshold": 0.0}),
        (TriggerPolicy, {"debounce_ms": -1}),
    ],
)
def test_bad_configs(cls: type, fields: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="must be"):
        cls(**fields)


def test_every_event_policy_fires_on_each_behaviour_undebounced() -> None:
    every = TriggerPolicy(every_event=True)
    session = Session("u1")
    outcomes = [
        step(session, CONFIG, every, "search", T0, "trail shoes", ()).outcome,
        step(session, CONFIG, every, "search", T0 + 1, "trail shoes", ()).outcome,
        step(session, CONFIG, every, "click", T0 + 2, "shoe", ("Sport", "Shoes")).outcome,
        step(session, CONFIG, every, "click", T0 + 3, "shoe 2", ("Sport", "Shoes")).outcome,
        step(session, CONFIG, every, "hint_exposure", T0 + 4, "", ()).outcome,
    ]
    # The first is a cold start, a repeat and a same-category click fire as every_event,
    # a click into a new category keeps its reason; exposures are no behaviour.
    assert outcomes == ["cold_start", "every_event", "new_category", "every_event", "no_signal"]
    assert session.trigger_ts == T0 + 3
