"""The offline x2q index of the last-day evaluation: which triggers it is built from (never the
test day's), the training users' popularity, and coverage where the read path looks."""

from __future__ import annotations

from aigq.events import ClickEvent, SearchEvent
from cache.recent import Trigger
from training.lastday import DaySample
from training.samples import DAY_MS, Context
from training.x2q_offline import coverage, heldout_triggers, popularity

T0 = 1_141_171_200_000  # 2006-03-01T00:00:00Z


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
    pop = popularity(events)
    assert pop.counts == {"a": 2, "b": 1}
    assert popularity([]).counts == {}


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
