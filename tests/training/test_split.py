"""The user/time split: held-out users by hash, nothing after the cut or of a held-out user in
training."""

from __future__ import annotations

import pytest

from aigq.events import ClickEvent, SearchEvent
from training import TrainingError
from training.samples import AnyEvent, SampleConfig, direct_samples
from training.split import SplitConfig, is_heldout, split_events, split_samples

HOUR = 3_600_000
DAY = 86_400_000
T0 = 1_767_225_600_000  # 2026-01-01T00:00Z
CUT = T0 + 10 * DAY


def _log(users: int) -> list[AnyEvent]:
    """Each user searches ``before-<day>`` on days 0..9 and ``after-<day>`` on days 10..12."""
    events: list[AnyEvent] = []
    for day in range(13):
        phase = "before" if day < 10 else "after"
        for u in range(users):
            ts = T0 + day * DAY + 9 * HOUR + u
            user = f"user-{u}"
            events.append(SearchEvent(user_id=user, ts=ts, query=f"{phase} {day} {u % 3}"))
            events.append(
                ClickEvent(user_id=user, ts=ts + 1, item_id=f"i{day}", item_text=f"{phase} page")
            )
    return events


def test_is_heldout_is_a_stable_fraction_of_users() -> None:
    ids = [f"user-{i}" for i in range(20_000)]
    held = {i for i in ids if is_heldout(i, 0.1)}
    assert 0.09 < len(held) / len(ids) < 0.11
    assert held == {i for i in ids if is_heldout(i, 0.1)}  # deterministic
    assert held <= {i for i in ids if is_heldout(i, 0.3)}  # a larger fraction only adds users
    assert held != {i for i in ids if is_heldout(i, 0.1, salt="another")}


def test_split_has_no_leakage_of_users_or_time() -> None:
    config = SplitConfig(cut_ms=CUT, heldout_fraction=0.3, samples=SampleConfig(window_ms=DAY))
    split = split_samples(_log(40), config)
    train_users = {s.context.user_id for s in split.train}
    test_users = {s.context.user_id for s in split.test}
    assert train_users and test_users
    assert not train_users & test_users
    assert all(is_heldout(u, 0.3, config.salt) for u in test_users)
    assert len(test_users) == sum(is_heldout(f"user-{u}", 0.3, config.salt) for u in range(40))

    for sample in split.train:  # nothing at or after the cut, in labels or context
        assert sample.context.last_ts < CUT
        assert all(q.startswith("before") for q in (*sample.labels, *sample.context.searches))
        assert sample.next_query is None or sample.next_query.startswith("before")
    assert len(split.train) == 9 * len(train_users)  # days 1..9 (day 0 has no context)

    for sample in split.test:  # context before the cut, labels in the window after it
        assert sample.context.cut_ms == CUT
        assert max(b[0] for b in sample.context.recent) < CUT
        assert all(q.startswith("before") for q in sample.context.searches)
        assert sample.labels == (f"after 10 {int(sample.context.user_id[5:]) % 3}",)


def test_split_events_drops_training_users_after_the_cut() -> None:
    config = SplitConfig(cut_ms=CUT, heldout_fraction=0.5)
    events = split_events(_log(10), config)
    assert all(e.ts < CUT and not is_heldout(e.user_id, 0.5) for e in events.train)
    assert all(is_heldout(e.user_id, 0.5) for e in events.heldout)
    assert any(e.ts >= CUT for e in events.heldout)
    assert split_samples(_log(10), config, train=direct_samples).train == []  # no hints here


def test_split_config_checks() -> None:
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(TrainingError):
            SplitConfig(cut_ms=CUT, heldout_fraction=bad)
    with pytest.raises(TrainingError, match="epoch milliseconds"):
        SplitConfig(cut_ms=CUT // 1000)
