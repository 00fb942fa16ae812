"""Where history goes in the served list: the candidate rules and their offline comparison."""

from __future__ import annotations

from aigq.datasets.aol import parse_user_lines
from aigq.datasets.base import Malformed, SourceItem
from cache.compose import compose
from cache.u2q import U2QRun
from training.history_rules import RULES, compare_rules, interleave, last_day_sample, lead

H = ["h1", "h2", "h3"]
G = ["g1", "h2", "g2", "g3"]


def test_rules_place_history_and_deduplicate() -> None:
    assert RULES["generated only (no history)"](H, G, 10) == G
    assert RULES["history only"](H, G, 2) == ["h1", "h2"]
    assert RULES["history first, then generated"](H, G, 10) == ["h1", "h2", "h3", "g1", "g2", "g3"]
    assert lead(1)(H, G, 10) == ["h1", "g1", "h2", "g2", "g3", "h3"]
    assert interleave(1, 1)(H, G, 10) == ["h1", "g1", "h2", "h3", "g2", "g3"]
    assert interleave(1, 1, history_first=False)(H, G, 4) == ["g1", "h1", "h2", "g2"]
    assert interleave(1, 2)(H, G, 10) == ["h1", "g1", "h2", "g2", "g3", "h3"]


def test_compose_applies_the_measured_rule() -> None:
    run = U2QRun(tuple(G), "m", 1, 1, 2, "drift")
    for k in (1, 3, 5, 10):
        served = [h.query for h in compose(run, [], [], k, history=H)]
        assert served == RULES["history first, then generated"](H, G, k)


def _user(user: str, days: list[list[str]]) -> list[SourceItem]:
    lines = []
    for day, queries in enumerate(days, start=1):
        for minute, query in enumerate(queries):
            lines += [f"{query}\t2006-03-{day:02d} 10:{minute:02d}:00", ""]
    return list(parse_user_lines(user, lines))


def test_last_day_sample_cuts_at_the_last_search_day() -> None:
    events = _user("u", [["a", "b"], ["c"], ["a", "d", "a"]])
    sample = last_day_sample([e for e in events if not isinstance(e, Malformed)])
    assert sample is not None
    assert sample.context.searches == ("a", "b", "c")
    assert sorted(sample.labels) == ["a", "d"]
    only = [e for e in _user("v", [["only day"]]) if not isinstance(e, Malformed)]
    assert last_day_sample(only) is None


def test_comparison_scores_every_user_once_against_held_out_users() -> None:
    # Users who come back to what they searched before: history finds it, popular does not.
    items: list[SourceItem] = []
    for i in range(40):
        items += _user(f"u{i}", [[f"own {i}", "popular q"], [f"other {i}"], [f"own {i}"]])
    result = compare_rules(items, stand_in="popular", folds=2)
    assert result.users == 40 and result.evaluated == 40
    rates = {score.rule: score.rate for score in result.scores}
    assert rates["history only"] == 1.0
    assert rates["history first, then generated"] == 1.0
    assert rates["generated only (no history)"] == 0.0
    assert result.in_history == 1.0
