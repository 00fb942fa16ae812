"""The synthetic e-commerce world: deterministic, ordered, drifting, all four event kinds."""

from __future__ import annotations

from collections import Counter

import pytest

from aigq.codec import decode, encode
from aigq.datasets import Malformed
from aigq.datasets.synthetic import (
    CATALOG,
    LEAVES,
    SyntheticConfig,
    generate,
    item_title,
    user_events,
)
from aigq.events import ClickEvent, HintClickEvent, HintExposureEvent, SearchEvent


def test_same_seed_same_events_other_seed_other_events() -> None:
    config = SyntheticConfig(users=20, days=3, seed=7)
    assert list(generate(config)) == list(generate(config))
    assert list(generate(config)) != list(generate(SyntheticConfig(users=20, days=3, seed=8)))


def test_adding_users_leaves_the_first_users_unchanged() -> None:
    small, big = SyntheticConfig(users=5, days=2), SyntheticConfig(users=9, days=2)
    assert list(user_events(small, 3)) == list(user_events(big, 3))


def test_stream_is_time_ordered_and_every_kind_appears() -> None:
    items = list(generate(SyntheticConfig(users=40, days=4)))
    assert [i.ts for i in items] == sorted(i.ts for i in items)
    kinds = Counter(type(i) for i in items)
    assert set(kinds) == {SearchEvent, ClickEvent, HintExposureEvent, HintClickEvent}
    assert kinds[ClickEvent] > kinds[HintExposureEvent] > kinds[HintClickEvent] > 0
    for item in items:  # every event survives the wire format
        assert decode(encode(item)) == item  # type: ignore[arg-type]


def test_each_user_stream_is_strictly_increasing_in_time() -> None:
    config = SyntheticConfig(users=10, days=5, sessions_per_day=4)
    for index in range(config.users):
        stamps = [e.ts for e in user_events(config, index)]
        assert stamps == sorted(set(stamps))


def test_hint_clicks_refer_to_a_shown_query() -> None:
    shown: dict[str, set[tuple[str, int]]] = {}
    clicks = 0
    for item in generate(SyntheticConfig(users=30, days=3)):
        if isinstance(item, HintExposureEvent):
            shown[item.request_id] = {(s.query, s.position) for s in item.shown}
        elif isinstance(item, HintClickEvent):
            clicks += 1
            assert (item.query, item.position) in shown[item.request_id]
    assert clicks > 0


def test_clicks_are_items_of_a_real_leaf_with_their_title() -> None:
    for item in generate(SyntheticConfig(users=10, days=2)):
        if isinstance(item, ClickEvent):
            root, leaf = item.category
            assert leaf in CATALOG[root]
            number = int(item.item_id.rsplit("-", 1)[1])
            assert item_title((root, leaf), number) == (item.item_id, item.item_text)


def test_interests_drift_more_with_more_drift() -> None:
    def leaves_per_user(drift: float) -> float:
        config = SyntheticConfig(users=30, days=10, drift=drift, seed=3)
        seen: dict[str, set[tuple[str, ...]]] = {}
        for item in generate(config):
            if isinstance(item, ClickEvent):
                seen.setdefault(item.user_id, set()).add(item.category)
        return sum(len(s) for s in seen.values()) / len(seen)

    still, drifting = leaves_per_user(0.0), leaves_per_user(0.6)
    assert still <= 2  # interests_per_user
    assert drifting > still + 1


def test_malformed_share_is_roughly_as_configured() -> None:
    items = list(generate(SyntheticConfig(users=30, days=3, malformed_rate=0.1)))
    bad = sum(isinstance(i, Malformed) for i in items)
    assert 0.05 < bad / len(items) < 0.15
    assert all(i.reason for i in items if isinstance(i, Malformed))


@pytest.mark.parametrize(
    "fields",
    [
        {"users": 0},
        {"days": 0},
        {"drift": 1.5},
        {"malformed_rate": -0.1},
        {"interests_per_user": len(LEAVES) + 1},
        {"clicks_per_search": 0},
    ],
)
def test_bad_config_is_rejected(fields: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(fields)).split("_")[0]):
        SyntheticConfig(**fields)  # type: ignore[arg-type]
