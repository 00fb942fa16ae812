"""The CTR model: labelling, each feature on a hand example, AUC, baselines, a tiny end-to-end
train that learns an obvious signal, and a save/load round trip."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aigq.codec import encode
from aigq.events import (
    ClickEvent,
    HintClickEvent,
    HintExposureEvent,
    SearchEvent,
    ShownQuery,
)
from aigq.registry import Registry
from streams.simulator import SimulatorSettings
from training import TrainingError
from training.ctr_data import (
    CtrExample,
    FeedbackStats,
    LabelStats,
    UserContext,
    UserState,
    default_cut,
    examples,
    simulated_feedback,
    split_by_day,
)
from training.ctr_eval import (
    PositionBaseline,
    QueryPopularityBaseline,
    auc,
    goal_met,
    log_loss,
    metric_row,
    train_ctr,
)
from training.ctr_features import (
    MINUTES_CAP,
    FeatureConfig,
    dense_features,
    fit_popularity,
    minutes_since,
    position_id,
    prefix_popularity,
    query_word_ids,
    recent_word_ids,
    source_id,
    stable_hash,
    user_bucket,
    word_overlap,
)
from training.ctr_model import CtrConfig, fit, load_ctr, train
from training.samples import AnyEvent

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
MIN = 60_000
DAY = 86_400_000


def _search(q: str, ts: int, user: str = "u1") -> SearchEvent:
    return SearchEvent(user_id=user, ts=ts, query=q)


def _exposure(rid: str, queries: list[str], ts: int, user: str = "u1") -> HintExposureEvent:
    shown = tuple(ShownQuery(query=q, source="history", position=i) for i, q in enumerate(queries))
    return HintExposureEvent(user_id=user, ts=ts, request_id=rid, shown=shown)


def _hint_click(rid: str, q: str, position: int, ts: int, user: str = "u1") -> HintClickEvent:
    return HintClickEvent(
        user_id=user, ts=ts, request_id=rid, query=q, source="history", position=position
    )


# ------------------------------------------------------------------ labelling
def test_examples_label_clicks_by_request_and_position_or_query() -> None:
    events: list[AnyEvent] = [
        _search("red shoes", T0),
        ClickEvent(user_id="u1", ts=T0 + MIN, item_id="i1", item_text="nike red runner"),
        _exposure("r1", ["red shoes", "blue hat", "tea"], T0 + 2 * MIN),
        _hint_click("r1", "blue hat", 1, T0 + 3 * MIN),
        _exposure("r2", ["red shoes", "blue hat"], T0 + 4 * MIN),
        _hint_click("r2", "Red  Shoes", 9, T0 + 5 * MIN),  # same query, other position
        _hint_click("r9", "tea", 0, T0 + 6 * MIN),  # no such exposure
        _exposure("r1", ["red shoes"], T0 + 7 * MIN),  # a duplicate request id
    ]
    stats = LabelStats()
    rows = examples({"u1": events}, stats=stats)
    assert [(r.request_id, r.query, r.label) for r in rows] == [
        ("r1", "red shoes", 0),
        ("r1", "blue hat", 1),
        ("r1", "tea", 0),
        ("r2", "red shoes", 1),
        ("r2", "blue hat", 0),
    ]
    first, second = rows[0].context, rows[3].context
    assert first.recent == ("red shoes", "nike red runner")
    assert first.last_search == "red shoes" and first.searches == 1
    assert first.history == ("red shoes",)
    assert rows[0].times_searched == 1 and rows[0].last_searched_ms == T0
    assert rows[1].times_searched == 0 and rows[1].last_searched_ms is None
    assert second.recent[-1] == "blue hat"  # the earlier hint click is behaviour
    assert rows[0].context is rows[1].context  # one context per exposure
    assert (stats.exposures, stats.duplicate_exposures) == (2, 1)
    assert (stats.hint_clicks, stats.unmatched_clicks) == (3, 1)


def test_context_never_holds_the_exposure_or_later_events() -> None:
    # the simulated order: exposure, its click, then the search, all at one time
    events: list[AnyEvent] = [
        _search("a b", T0),
        _exposure("r1", ["a b"], T0 + MIN),
        _hint_click("r1", "a b", 0, T0 + MIN),
        _search("a b", T0 + MIN),
    ]
    (row,) = examples({"u1": events})
    assert row.label == 1
    assert row.context.searches == 1 and row.times_searched == 1
    assert row.context.recent == ("a b",)


def test_split_by_day_and_default_cut() -> None:
    rows = examples({"u1": [_search("x", T0), _exposure("r1", ["x"], T0 + DAY)]})
    assert split_by_day(rows, T0 + DAY) == ([], rows)
    assert split_by_day(rows, T0 + DAY + 1) == (rows, [])
    # ten days: the last two are held out
    assert default_cut([T0 + d * DAY for d in range(10)], 0.2) == T0 + 8 * DAY
    assert default_cut([T0, T0 + DAY + 5], 0.2) == T0 + DAY  # at least one day each side
    with pytest.raises(TrainingError):
        default_cut([T0, T0 + 5], 0.2)


def test_simulated_feedback_shows_history_before_each_search() -> None:
    events: list[AnyEvent] = [
        _search("red shoes", T0),
        _search("blue hat", T0 + MIN),
        _search("red shoes", T0 + 2 * MIN),
        _exposure("old", ["x"], T0 + 3 * MIN),  # the log's own feedback is replaced
    ]
    settings = SimulatorSettings(position_decay=0.0)  # every position is examined
    stats = FeedbackStats()
    out = simulated_feedback({"u1": events}, settings, popular=["tea"], stats=stats)["u1"]
    kinds = [e.type for e in out]
    assert kinds == ["search", "hint_exposure", "search", "hint_exposure", "hint_click", "search"]
    first, second = out[1], out[3]
    assert isinstance(first, HintExposureEvent) and isinstance(second, HintExposureEvent)
    assert [s.query for s in first.shown] == ["red shoes"]  # history only: no popular needed
    assert {s.query for s in second.shown} == {"red shoes", "blue hat"}
    click = out[4]
    assert isinstance(click, HintClickEvent) and click.query == "red shoes"
    assert click.request_id == second.request_id and click.ts == second.ts == T0 + 2 * MIN
    assert (stats.exposures, stats.clicks) == (2, 1)
    assert (stats.searches_without_history, stats.source_hint_events) == (1, 1)
    rows = examples({"u1": out})
    assert sum(r.label for r in rows) == 1


# ------------------------------------------------------------------ features
def _row(query: str = "red shoes", **kw: object) -> CtrExample:
    context = UserContext(
        "u1", T0 + 90 * MIN, ("blue hat", "red running shoes"), "red running shoes", 3,
        ("red shoes", "blue hat"),
    )  # fmt: skip
    fields: dict[str, object] = {"context": context, "query": query, "position": 2,
                                 "source": "history", "label": 0} | kw  # fmt: skip
    return CtrExample(**fields)  # type: ignore[arg-type]


def test_hashes_are_stable_and_in_range() -> None:
    config = FeatureConfig(user_buckets=100, word_buckets=50)
    # CRC-32 of "u:alice" is 0x67714f63 = 1735479139; 1735479139 % 99 = 31
    assert stable_hash("u", "alice", 100) == 1 + 1_735_479_139 % 99 == 32
    assert user_bucket("alice", config) == 32
    ids = query_word_ids("Red  SHOES red", config)
    assert ids[0] == ids[2] == stable_hash("w", "red", 50) and len(ids) == 3
    assert all(1 <= i < 50 for i in ids)
    assert query_word_ids("a b c d e f g h i j", config)[-1] == stable_hash("w", "h", 50)


def test_recent_words_newest_first_distinct_and_capped() -> None:
    config = FeatureConfig(recent_words=3)
    ids = recent_word_ids(("old words", "red shoes", "red hat"), config)
    assert ids == [stable_hash("w", w, config.word_buckets) for w in ("red", "hat", "shoes")]


def test_position_source_minutes_overlap() -> None:
    assert (position_id(3), position_id(500)) == (3, 63)
    assert (source_id("history"), source_id("popular"), source_id("other")) == (1, 4, 0)
    assert minutes_since(T0 + 90 * MIN, T0) == 90.0
    assert minutes_since(T0, None) == MINUTES_CAP
    assert minutes_since(T0 + 365 * DAY, T0) == MINUTES_CAP
    assert word_overlap("red shoes", "red running shoes") == pytest.approx(2 / 3)
    assert word_overlap("", "x") == 0.0


def test_dense_features_on_a_hand_example() -> None:
    row = _row(times_searched=2, last_searched_ms=T0)
    train = [_row(label=1), _row(), _row(), _row("tea", label=1)]
    table = fit_popularity(train)  # "red shoes": shown 3, clicked 1; global 2 of 4
    assert table.of("Red Shoes") == (3, 1) and table.rate == 0.5
    config = FeatureConfig(smoothing=2.0)
    got = dense_features(row, table.of(row.query), table, config)
    want = [
        math.log1p(2),
        math.log1p(90),
        2 * 2 / (2 + 3),  # ROUGE-L: LCS "red shoes" of 2 and 3 words
        2 / 3,
        1.0,
        math.log1p(3),
        math.log1p(1),
        (1 + 2 * 0.5) / (3 + 2),
        math.log1p(3),
    ]
    assert got == pytest.approx(want)
    unseen = dense_features(_row("boots"), table.of("boots"), table, config)
    assert unseen[4] == 0.0 and unseen[7] == pytest.approx(0.5)  # the global rate


def test_prefix_popularity_sees_only_earlier_exposures() -> None:
    early, late = _row(label=1), _row(label=0)
    late = CtrExample(UserContext("u2", T0 + DAY, (), "", 0, ()), "red shoes", 0, "history", 0)
    twin = CtrExample(early.context, "red shoes", 1, "history", 1)  # same exposure time
    assert prefix_popularity([late, early, twin]) == [(2, 2), (0, 0), (0, 0)]


# ------------------------------------------------------------------ metrics and baselines
def test_auc_on_a_hand_example_with_ties() -> None:
    labels = [1, 0, 1, 0, 0]
    scores = [0.9, 0.9, 0.5, 0.1, 0.5]
    # pairs (pos, neg): 0.9 vs 0.9 tie 0.5, 0.9>0.1, 0.9>0.5; 0.5<0.9, 0.5>0.1, 0.5=0.5 tie
    assert auc(labels, scores) == pytest.approx((0.5 + 1 + 1 + 0 + 1 + 0.5) / 6)
    assert auc([1, 0], [0.2, 0.8]) == 0.0
    assert auc([1, 1], [0.2, 0.8]) == 0.5
    assert log_loss([1, 0], [0.8, 0.2]) == pytest.approx(-math.log(0.8))
    with pytest.raises(TrainingError):
        auc([1], [0.1, 0.2])


def test_baselines_smooth_towards_the_global_rate() -> None:
    train = [_row(position=0, label=1), _row(position=0, label=1), _row(position=1),
             _row("tea", position=1)]  # fmt: skip
    position = PositionBaseline(smoothing=2.0).fit(train)
    assert position.predict([_row(position=0), _row(position=1), _row(position=7)]) == (
        pytest.approx([(2 + 1) / 4, (0 + 1) / 4, 0.5])
    )
    query = QueryPopularityBaseline(smoothing=2.0).fit(train)
    assert query.predict([_row(), _row("tea"), _row("new")]) == (
        pytest.approx([(2 + 1) / 5, (0 + 1) / 3, 0.5])
    )
    rows = [metric_row("m", train, [0.9, 0.8, 0.1, 0.2])]
    rows += [metric_row("b1", train, [0.5] * 4), metric_row("b2", train, [0.6, 0.5, 0.5, 0.4])]
    assert rows[0].auc == 1.0 and rows[0].positives == 2
    assert rows[2].auc == (2 + 0.5 + 1) / 4  # the tie between a click and a non-click
    assert goal_met(rows) == (True, 0.875)  # 1.0 >= 0.875 + 0.03


# ------------------------------------------------------------------ model
TOPICS = ["red shoes", "blue hat", "green tea", "jazz records", "chess set", "trail map"]


def _events(users: int, days: int, seed: int = 0) -> dict[str, list[AnyEvent]]:
    """Users who search one topic, then see three topics; they click the one they searched,
    whatever its position (an obvious signal no position or popularity baseline has)."""
    rng = random.Random(seed)
    out: dict[str, list[AnyEvent]] = {}
    for u in range(users):
        user, events = f"u{u}", list[AnyEvent]()
        for n in range(days * 3):
            ts = T0 + (n // 3) * DAY + (n % 3) * 60 * MIN + u
            topic = rng.choice(TOPICS)
            shown = [*rng.sample([t for t in TOPICS if t != topic], 2), topic]
            rng.shuffle(shown)
            rid = f"r{n}"
            events += [_search(topic, ts, user), _exposure(rid, shown, ts + MIN, user)]
            if rng.random() < 0.8:
                events.append(_hint_click(rid, topic, shown.index(topic), ts + 2 * MIN, user))
        out[user] = events
    return out


SMALL = CtrConfig(epochs=3, batch_size=64, lr=1e-2, user_dim=4, word_dim=8, position_dim=2,
                  source_dim=2, hidden=16,
                  features=FeatureConfig(user_buckets=64, word_buckets=256))  # fmt: skip


def test_tiny_model_learns_the_obvious_signal_and_round_trips(tmp_path: Path) -> None:
    by_user = _events(users=12, days=6)
    registry = Registry(tmp_path)
    run = train_ctr(by_user, T0 + 5 * DAY, SMALL, registry)
    model, position, popularity = run.rows
    assert model.examples == 12 * 3 * 3 and model.positives > 0
    assert model.auc > 0.9 and model.auc > max(position.auc, popularity.auc) + 0.2
    assert run.goal and not run.published
    assert registry.versions("aigq-ctr") == []  # reserved, not published
    loaded = load_ctr(run.model.path)
    rows = [r for r in examples(by_user) if r.context.now_ms >= T0 + 5 * DAY]
    assert loaded.score(rows) == pytest.approx(run.trained.model.score(rows), abs=1e-6)
    assert run.publish(registry) == run.model
    assert registry.versions("aigq-ctr") == [run.model.version]
    manifest = run.model.manifest()
    assert manifest["kind"] == "ctr" and manifest["metrics"]["goal_met"] is True
    assert manifest["data"]["labelling"]["exposures"] == 12 * 18


def test_training_is_seeded_and_scoring_a_new_context_works(tmp_path: Path) -> None:
    rows = examples(_events(users=4, days=2))
    a = fit(rows, SMALL).score(rows[:6])
    b = train(rows, SMALL, Registry(tmp_path)).model.score(rows[:6])
    assert a == b
    state = UserState("u9")  # IL-GRPO's use: fold a user's events, then score queries
    state.add(_search("jazz records", T0))
    context = state.context(T0 + MIN)
    queries = [ShownQuery(query=q, source="u2q", position=i) for i, q in enumerate(TOPICS)]
    probabilities = fit(rows, SMALL).score([state.example(context, q) for q in queries])
    assert len(probabilities) == 6 and all(0.0 < p < 1.0 for p in probabilities)


def test_fit_needs_both_labels() -> None:
    rows = [r for r in examples(_events(users=2, days=1)) if r.label == 0]
    with pytest.raises(TrainingError, match="both"):
        fit(rows, SMALL)
    with pytest.raises(TrainingError):
        CtrConfig(epochs=0)


def test_cli_trains_from_an_events_file(tmp_path: Path) -> None:
    from shell.cli import app

    path = tmp_path / "events.jsonl"
    lines = [encode(e).decode() for events in _events(6, 5).values() for e in events]
    path.write_text("\n".join([*lines, '{"type": "search"}']) + "\n")
    result = CliRunner().invoke(app, [
        "train", "ctr", "--events", str(path), "--cut", "2026-01-05", "--epochs", "1",
        "--registry", str(tmp_path / "reg"), "--no-publish",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "query-popularity" in result.output and "goal" in result.output
    assert "trained, not published" in result.output
    assert not (tmp_path / "reg" / "aigq-ctr" / "LATEST").exists()
