"""The last-day protocol: samples, recorded triggers, metrics and the served list (pure), and
``aigq eval --protocol last-day`` end to end on a tiny log folder with the baselines only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aigq.events import ClickEvent, SearchEvent
from cache.recent import Trigger
from cache.settings import HintSettings
from cache.u2q import U2QRun
from shell.cli import app
from tests.training.aol_files import split_users, write_user
from training.daymetrics import any_hit, day_metrics, hit_curve, real_words, recall, vocabulary
from training.lastday import DaySample, last_day_samples, recorded_triggers
from training.samples import DAY_MS, Context
from training.served import popular_queries, served_at, served_list

T0 = 1_141_171_200_000  # 2006-03-01T00:00:00Z
HOUR = 3_600_000


def search(user: str, ts: int, query: str) -> SearchEvent:
    return SearchEvent(user_id=user, ts=ts, query=query)


def click(user: str, ts: int, item: str, category: tuple[str, ...] = ()) -> ClickEvent:
    return ClickEvent(user_id=user, ts=ts, item_id=item, item_text=item, category=category)


def context(user: str = "u", last_ts: int = T0) -> Context:
    return Context(user, last_ts + 1, (), (), (), 1, "", last_ts)


def day_sample(labels: tuple[str, ...], past: frozenset[str] = frozenset()) -> DaySample:
    return DaySample(context(), T0 + DAY_MS, labels, past, ())


# --- samples and triggers --------------------------------------------------------------


def test_last_day_sample_cuts_at_the_last_search_day() -> None:
    events = [
        search("a", T0 + 9 * HOUR, "Cheap  Flights"),
        click("a", T0 + 9 * HOUR + 1, "http://fly.com/", ("fly.com",)),
        search("a", T0 + 10 * HOUR, "hotels paris"),
        search("a", T0 + 4 * DAY_MS + HOUR, "cheap flights"),
        search("a", T0 + 4 * DAY_MS + 2 * HOUR, "Weather"),
        search("a", T0 + 4 * DAY_MS + 3 * HOUR, "weather"),
        click("a", T0 + 4 * DAY_MS + 3 * HOUR + 1, "http://w.com/", ("w.com",)),
        search("b", T0 + HOUR, "only one day"),  # no history before its last day: no sample
    ]
    [sample] = last_day_samples(events)
    assert sample.user_id == "a"
    assert sample.day_ms == T0 + 4 * DAY_MS
    assert sample.context.cut_ms == sample.day_ms
    assert sample.context.last_ts == T0 + 10 * HOUR  # nothing of the test day
    assert sample.context.searches == ("Cheap  Flights", "hotels paris")
    assert sample.labels == ("weather", "cheap flights")  # normalised, by interest strength
    assert sample.past == {"cheap flights", "hotels paris"}
    assert sample.novel == ("weather",)
    assert [t.member for t in sample.triggers] == [
        "query:hotels paris",
        "item:http://fly.com/",
        "category:fly.com",
        "query:cheap flights",
    ]


def test_recorded_triggers_keep_the_newest_and_expire() -> None:
    events = [
        search("u", T0, "shoes"),
        click("u", T0 + 1, "i1", ("sport", "running")),
        search("u", T0 + 2, "SHOES"),  # the same trigger, newer time
    ]
    got = recorded_triggers(events, now_ms=T0 + DAY_MS)
    assert got == (
        Trigger("query", "shoes", T0 + 2),
        Trigger("item", "i1", T0 + 1),
        Trigger("category", "running", T0 + 1),
    )
    assert recorded_triggers(events, T0 + DAY_MS, keep=1) == (Trigger("query", "shoes", T0 + 2),)
    assert recorded_triggers(events, T0 + 2 + 7 * DAY_MS) == ()  # the set expired
    assert recorded_triggers(events, T0 + 2) == recorded_triggers(events[:2], T0 + 2)


# --- metrics ---------------------------------------------------------------------------


def test_hit_recall_and_real_words() -> None:
    assert any_hit(["a", "B  c"], ["b c"], 2) == 1.0
    assert any_hit(["a", "b c"], ["b c"], 1) == 0.0
    assert recall(["a", "a", "b"], ["a", "b", "c", "d"], 10) == 0.5
    assert recall(["a"], [], 10) == 0.0
    assert real_words(["red shoes", "blue zzz"], frozenset({"red", "shoes", "blue"}), 10) == (3, 4)
    assert vocabulary([search("u", T0, "Red Shoes"), click("u", T0, "x")]) == {"red", "shoes"}


def test_day_metrics() -> None:
    samples = [
        day_sample(("cheap flights", "weather"), frozenset({"cheap flights"})),
        day_sample(("pizza",), frozenset({"pizza"})),  # nothing novel: not in novel_hit
        day_sample(("tv",)),
    ]
    predictions = [["Cheap Flights", "weather", "x y"], ["pizza"], []]
    vocab = frozenset({"cheap", "flights", "weather", "pizza"})
    m = day_metrics(samples, predictions, vocab, ks=(1, 3))
    assert m["users"] == 3 and m["novel_users"] == 2
    assert m["hit@1"] == pytest.approx(2 / 3)
    assert m["hit@3"] == pytest.approx(2 / 3)
    assert m["recall@10"] == pytest.approx((1.0 + 1.0 + 0.0) / 3)
    assert m["novel_hit@10"] == pytest.approx(1 / 2)  # weather, of users a and c
    assert m["real_words"] == pytest.approx(4 / 6)  # "x", "y" are not in the vocabulary
    assert m["distinct@10"] == pytest.approx((3 + 1 + 0) / 3)
    assert m["empty"] == pytest.approx(1 / 3)
    assert hit_curve(samples, predictions, 3, novel=False) == pytest.approx([2 / 3] * 3)
    assert hit_curve(samples, predictions, 3, novel=True) == pytest.approx([0.0, 0.5, 0.5])


# --- the served list ---------------------------------------------------------------------


def run(queries: tuple[str, ...], event_ts: int = T0) -> U2QRun:
    return U2QRun(queries, "m@v1", 1, event_ts, event_ts)


def test_served_list_is_the_read_apis_composition() -> None:
    settings = HintSettings(default_k=3, triggers=1)
    popular = ["p1", "p2", "p3", "p4"]
    triggers = (Trigger("query", "new", T0 + 5), Trigger("query", "old", T0 - 5))
    x2q = {"query:new": ["x1", "x2"], "query:old": ["o1"]}

    def texts(u2q: U2QRun | None, x: dict[str, list[str]]) -> list[str]:
        return [h.query for h in served_list(u2q, triggers, x, popular, settings)]

    assert texts(run(("a", "b", "c", "d")), {}) == ["a", "b", "c"]
    assert texts(run(()), {}) == ["p1", "p2", "p3"]  # the fallback
    assert texts(None, {}) == ["p1", "p2", "p3"]
    # a trigger newer than the run interleaves, x2q first; only the newest trigger is read
    assert texts(run(("a", "A", "b")), x2q) == ["x1", "a", "x2"]
    hints = served_list(run(("a",)), triggers, {}, [], settings, k=5)
    assert [(h.query, h.source) for h in hints] == [("a", "u2q")]
    fallback = HintSettings(popular_fallback=("static",))
    assert [h.query for h in served_list(None, (), {}, [], fallback)] == ["static"]
    # the user's history goes first, as many as AIGQ_HINTS_HISTORY, and is never repeated
    one = HintSettings(default_k=3, triggers=1, history=1)
    hinted = served_list(run(("a", "h1")), (), {}, popular, one, history=("H1", "h2"))
    assert [(h.query, h.source) for h in hinted] == [("H1", "history"), ("a", "u2q")]
    both = served_list(None, (), {}, popular, settings, history=("h1", "h2"))
    assert [(h.query, h.source) for h in both] == [("h1", "history"), ("h2", "history")]


def test_served_at_expires_with_the_run() -> None:
    r = run(("a",))
    assert served_at(r, T0 + DAY_MS) is r
    assert served_at(r, T0 + 7 * DAY_MS) is None
    assert served_at(None, T0) is None


def test_popular_queries_count_searches() -> None:
    events = [search("a", T0, "B"), search("b", T0, "a"), search("c", T0, "b"), click("a", T0, "x")]
    assert popular_queries(events, 5) == ["B", "a"]
    assert popular_queries(events, 1) == ["B"]


# --- aigq eval --protocol last-day, end to end ----------------------------------------------


def test_eval_last_day_end_to_end(tmp_path: Path) -> None:
    data = tmp_path / "data" / "aol" / "user_search_logs"
    for i, user in enumerate(split_users(held=False, n=4)):  # training users, before the cut
        write_user(data, user, [("weather", f"2006-03-0{i + 1} 10:00:00"),
                                 ("weather", f"2006-03-0{i + 2} 10:00:00"),
                                 (f"news {i}", f"2006-03-0{i + 2} 11:00:00")])  # fmt: skip
    a, b = split_users(held=True, n=2)
    # a's last day repeats an old query (cheap flights) and adds a new one (weather)
    write_user(data, a, [("cheap flights", "2006-03-01 09:00:00"),
                          ("hotels paris", "2006-03-01 10:00:00"),
                          ("cheap flights", "2006-03-01 11:00:00"),
                          ("cheap flights", "2006-03-20 09:00:00"),
                          ("weather", "2006-03-20 10:00:00")])  # fmt: skip
    # b's last day is new only
    write_user(data, b, [("pizza", "2006-03-02 09:00:00"),
                          ("pizza recipe", "2006-03-03 09:00:00")])  # fmt: skip
    out = tmp_path / "report"
    args = ["eval", "--data-dir", str(tmp_path / "data"), "--protocol", "last-day",
            "--no-default-model", "--no-zero-shot", "--no-semantic", "--out", str(out)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "| user-frequent |" in result.output

    record = json.loads((out / "results.json").read_text())
    assert record["config"]["protocol"] == "last-day"
    assert record["data"]["heldout_users"] == 2
    assert record["data"]["train_users"] == 4
    assert record["data"]["novel_users"] == 2
    # a's prompt shows cheap flights and hotels paris; its last day repeats cheap flights: 1
    assert record["data"]["copy_ceiling_users"] == 1
    metrics = {p["name"]: p["metrics"] for p in record["predictors"]}
    assert list(metrics) == ["most-popular", "user-frequent", "co-occurrence", "served (no u2q)"]
    frequent = metrics["user-frequent"]
    assert frequent["hit@1"] == 0.5  # a: cheap flights, searched before and again
    assert frequent["recall@10"] == 0.25  # a: 1 of 2 labels; b: 0 of 1
    assert frequent["novel_hit@10"] == 0.0  # the repeat is no novel hit
    assert frequent["real_words"] == 0.0  # the held-out users' own words, unseen in training
    popular = metrics["most-popular"]
    assert popular["hit@1"] == 0.5 and popular["novel_hit@10"] == 0.5  # a: weather
    assert popular["real_words"] == 1.0
    assert metrics["served (no u2q)"]["hit@1"] == 0.5  # the popular fallback: weather first
    for m in metrics.values():
        assert m["empty"] == 0.0
    text = (out / "results.md").read_text()
    assert "Last-day protocol: 2 held-out users" in text
    assert "| novel@10 |" in text
    assert "1 of 2 users (0.5000) searched, on their last day, one of the history" in text

    # --heldout-data: every user of that folder is held out, whatever the split says
    other = tmp_path / "other" / "aol" / "user_search_logs"
    write_user(other, "x", [("cheap flights", "2006-04-01 09:00:00"),
                             ("weather", "2006-04-02 09:00:00")])  # fmt: skip
    args += ["--heldout-data", str(tmp_path / "other"), "--out", str(tmp_path / "r2")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "r2" / "results.json").read_text())
    assert record["data"]["heldout_users"] == 1
    assert record["data"]["train_users"] == 4
    metrics = {p["name"]: p["metrics"] for p in record["predictors"]}
    assert metrics["most-popular"]["novel_hit@10"] == 1.0
    assert metrics["user-frequent"]["hit@30"] == 0.0
