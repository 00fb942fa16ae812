"""The offline x2q index of the last-day evaluation: which triggers it is built from (never the
test day's), the training users' popularity, and coverage where the read path looks."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from aigq.events import ClickEvent, SearchEvent
from cache.recent import Trigger
from generators.x2q_triggers import popularity_of
from shell.cli import app
from tests.training.aol_files import split_users, write_user
from training.lastday import DaySample
from training.samples import DAY_MS, Context
from training.x2q_offline import coverage, heldout_triggers

T0 = 1_141_171_200_000  # 2006-03-01T00:00:00Z
THINK = Path(__file__).resolve().parents[2] / "models" / "aigq-think"


def _sample(user: str, day: int, triggers: tuple[Trigger, ...]) -> DaySample:
    context = Context(user, day, (), (), (), 1, "", day - 1)
    return DaySample(context, day, ("label",), frozenset(), triggers)


def test_triggers_come_from_each_users_days_before_their_test_day() -> None:
    day_a, day_b = T0 + 10 * DAY_MS, T0 + 20 * DAY_MS
    held = [
        SearchEvent(user_id="a", ts=day_a - DAY_MS, query="cheap flights"),
        SearchEvent(user_id="a", ts=day_a + 5, query="test day query"),  # the test day: out
        SearchEvent(user_id="a", ts=day_a - 9 * DAY_MS, query="too old"),  # before the window
        ClickEvent(
            user_id="b", ts=day_b - 2 * DAY_MS, item_id="x.com", item_text="x", category=("x.com",)
        ),
        SearchEvent(user_id="c", ts=day_b - 1, query="not held out"),  # no test sample
    ]
    test = [_sample("a", day_a, ()), _sample("b", day_b, ())]
    members = {t.member for t in heldout_triggers(test, held, days=7)}
    assert members == {"query:cheap flights", "item:x.com", "category:x.com"}
    assert heldout_triggers(test, [], days=7) == []


def test_popularity_counts_searches_only_of_the_events_given() -> None:
    events = [SearchEvent(user_id="u", ts=T0 + i, query=q) for i, q in enumerate("aab")]
    pop = popularity_of(events)
    assert pop.counts == {"a": 2, "b": 1}
    assert popularity_of([]).counts == {}


def test_coverage_is_measured_on_the_looked_up_triggers() -> None:
    t = [Trigger("query", f"q{i}", T0 - i) for i in range(4)]
    test = [_sample("a", T0, (t[0], t[1], t[2])), _sample("b", T0, (t[3],)), _sample("c", T0, ())]
    entries = {t[0].member: ("x",), t[2].member: ("y",)}
    figures = coverage(test, entries, looked_up=2)
    # looked up: a's q0, q1 and b's q3: one of three in the index
    assert figures["looked_up_triggers"] == 3
    assert figures["looked_up_covered"] == 1 / 3
    assert figures["recorded_triggers"] == 4 and figures["recorded_covered"] == 2 / 4
    assert figures["users_with_triggers"] == 2 and figures["users_with_x2q"] == 1 / 2


# --- aigq eval --x2q, end to end on a tiny log with the shipped Think model ------------------


def test_eval_serves_with_and_without_the_x2q_index(tmp_path: Path) -> None:
    data = tmp_path / "data" / "aol" / "user_search_logs"
    for i, user in enumerate(split_users(held=False, n=3)):
        write_user(data, user, [("weather", f"2006-03-0{i + 1} 10:00:00"),
                                 (f"news {i}", f"2006-03-0{i + 2} 11:00:00")])  # fmt: skip
    (a,) = split_users(held=True, n=1)
    write_user(data, a, [("cheap flights", "2006-03-18 09:00:00"),
                          ("hotels paris", "2006-03-19 10:00:00"),
                          ("paris weather", "2006-03-20 10:00:00")])  # fmt: skip
    out = tmp_path / "report"
    args = ["eval", "--data-dir", str(tmp_path / "data"), "--protocol", "last-day",
            "--no-default-model", "--no-zero-shot", "--no-semantic", "--out", str(out),
            "--x2q", str(THINK), "--x2q-days", "3"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "results.json").read_text())
    names = [p["name"] for p in record["predictors"]]
    assert names[-2:] == ["served (no u2q)", "served (no u2q) + x2q"]
    x2q = record["data"]["x2q"]
    # a's recent set at its last day: the two searches and their clicks (query, item and
    # category triggers), all of the 3 days before it
    assert x2q["triggers"] == 6 and x2q["looked_up_triggers"] == 5
    assert x2q["indexed"] == round(x2q["recorded_covered"] * 6)
    served = {p["name"]: p["model"]["sources"] for p in record["predictors"] if p.get("model")}
    # a's two history queries lead both lists; with x2q its triggers' queries follow (a list
    # with history is not padded with popular queries)
    assert served["served (no u2q)"] == {"history": 2}
    assert served["served (no u2q) + x2q"]["history"] == 2
    assert 1 <= served["served (no u2q) + x2q"]["x2q"] <= 8
    assert record["config"]["x2q_model"] == str(THINK)
