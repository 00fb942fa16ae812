"""A synthetic e-commerce log for tests: users whose interests drift over a category tree.

The world is a small category tree (root → leaf) whose leaves hold items with titles made of
the leaf's brands, adjectives and nouns. Each user likes a few leaves; at every session one
liked leaf may be swapped for another (mostly a sibling, sometimes anywhere), so interests
*drift* the way the nearline trigger policy must notice. A session is a HintQ exposure of
three hint queries (one click on a matching one, sometimes), then searches for the current
interest, each followed by clicks on items of that leaf.

Everything is a pure function of :class:`SyntheticConfig`: the same seed gives the same events,
and each user's stream depends only on the seed and the user's index, so a test can ask for
more users without changing the first ones'. Optionally a share of lines come out as
:class:`~aigq.datasets.base.Malformed`, to exercise the dead-letter path.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from aigq.datasets.base import Malformed, SourceItem, merge_by_time
from aigq.events import (
    ClickEvent,
    HintClickEvent,
    HintExposureEvent,
    SearchEvent,
    ShownQuery,
)

DAY_MS = 86_400_000
HINTS_SHOWN = 3  # one HintQ exposure shows three queries (paper §4.1)

# root → leaf → brands | adjectives | nouns. Small on purpose: a test reads it at a glance.
_CATALOG_TEXT: dict[str, dict[str, tuple[str, str, str]]] = {
    "Electronics": {
        "Phones": ("Pixel|Galaxy|iPhone", "unlocked|5G|refurbished", "phone|smartphone"),
        "Headphones": ("Sony|Bose|JBL", "wireless|noise cancelling|over-ear", "headphones|earbuds"),
        "Laptops": ("ThinkPad|MacBook|Zenbook", "14 inch|lightweight|gaming", "laptop|notebook"),
    },
    "Home": {
        "Kitchen": ("Tefal|Le Creuset|OXO", "non-stick|cast iron|stainless", "pan|pot|kettle"),
        "Bedding": ("IKEA|Brooklinen|Casper", "cotton|king size|hypoallergenic", "duvet|pillow"),
        "Lighting": ("Philips Hue|Govee|Lutron", "smart|dimmable|warm white", "lamp|bulb"),
    },
    "Sports": {
        "Running": ("Nike|Asics|Hoka", "trail|cushioned|breathable", "running shoes|shorts"),
        "Cycling": ("Shimano|Giant|Trek", "carbon|gravel|clipless", "bike|helmet|pedals"),
        "Yoga": ("Manduka|Lululemon|Gaiam", "non-slip|eco|thick", "yoga mat|blocks|leggings"),
    },
    "Beauty": {
        "Skincare": ("CeraVe|Olay|La Roche-Posay", "hydrating|spf 50", "moisturizer|serum"),
        "Fragrance": ("Chanel|Dior|Jo Malone", "floral|woody|travel size", "perfume|cologne"),
    },
}
Words = tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]


def _words(brands: str, adjectives: str, nouns: str) -> Words:
    return tuple(brands.split("|")), tuple(adjectives.split("|")), tuple(nouns.split("|"))


CATALOG: dict[str, dict[str, Words]] = {
    root: {leaf: _words(*text) for leaf, text in leaves.items()}
    for root, leaves in _CATALOG_TEXT.items()
}

LEAVES: tuple[tuple[str, str], ...] = tuple(
    (root, leaf) for root, leaves in CATALOG.items() for leaf in leaves
)


@dataclass(frozen=True)
class SyntheticConfig:
    """How big and how busy the synthetic world is."""

    users: int = 200
    """number of users (ids ``u0000``, ``u0001``, ...)"""
    days: int = 7
    """days of activity, starting at ``start_ms``"""
    seed: int = 0
    """the same seed gives the same events"""
    start_ms: int = 1_767_225_600_000
    """UTC epoch ms of day 0 (default 2026-01-01T00:00:00Z)"""
    sessions_per_day: float = 1.5
    """mean sessions per user and day"""
    searches_per_session: float = 2.5
    """mean searches per session (at least one)"""
    clicks_per_search: float = 1.5
    """mean item clicks after each search"""
    interests_per_user: int = 2
    """how many leaves a user likes at once"""
    drift: float = 0.15
    """chance, per session, that one liked leaf is replaced"""
    hint_click_rate: float = 0.4
    """chance that a user clicks a shown hint query that matches a liked leaf"""
    malformed_rate: float = 0.0
    """share of extra lines that come out malformed (for dead-letter tests)"""

    def __post_init__(self) -> None:
        if self.users < 1 or self.days < 1:
            raise ValueError(f"users and days must be >= 1, got {self.users} and {self.days}")
        if not 1 <= self.interests_per_user <= len(LEAVES):
            raise ValueError(f"interests_per_user must be in 1..{len(LEAVES)}")
        for name in ("sessions_per_day", "searches_per_session", "clicks_per_search"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("drift", "hint_click_rate", "malformed_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")


def generate(config: SyntheticConfig) -> Iterator[SourceItem]:
    """Every user's events, merged into one stream ordered by time."""
    return merge_by_time(user_events(config, index) for index in range(config.users))


def user_id(index: int) -> str:
    return f"u{index:04d}"


def item_title(leaf: tuple[str, str], number: int) -> tuple[str, str]:
    """The ``(item_id, title)`` of item ``number`` of a leaf: deterministic, readable."""
    brands, adjectives, nouns = CATALOG[leaf[0]][leaf[1]]
    brand = brands[number % len(brands)]
    adjective = adjectives[(number // len(brands)) % len(adjectives)]
    noun = nouns[(number // (len(brands) * len(adjectives))) % len(nouns)]
    slug = f"{leaf[1][:3].lower()}-{number:03d}"
    return slug, f"{brand} {adjective} {noun}"


def leaf_query(leaf: tuple[str, str], rng: random.Random) -> str:
    """A query a user interested in ``leaf`` might type."""
    brands, adjectives, nouns = CATALOG[leaf[0]][leaf[1]]
    shape = rng.random()
    if shape < 0.4:
        return f"{rng.choice(adjectives)} {rng.choice(nouns)}"
    if shape < 0.8:
        return f"{rng.choice(brands)} {rng.choice(nouns)}".lower()
    return rng.choice(nouns)


def user_events(config: SyntheticConfig, index: int) -> Iterator[SourceItem]:
    """One user's events in time order; depends only on the seed and ``index``."""
    rng = random.Random(f"{config.seed}:{index}")
    uid = user_id(index)
    liked = rng.sample(LEAVES, config.interests_per_user)
    last_ts = config.start_ms
    sequence = 0
    for day in range(config.days):
        day_start = config.start_ms + day * DAY_MS
        starts = sorted(
            rng.randrange(day_start, day_start + DAY_MS - 3_600_000)
            for _ in range(_count(rng, config.sessions_per_day, at_least=0))
        )
        for start in starts:
            liked = _drift(liked, rng, config.drift)
            clock = max(start, last_ts + 1)
            for event in _session(config, rng, uid, liked, clock, f"{uid}-{sequence}"):
                last_ts = event.ts
                yield event
                if config.malformed_rate and rng.random() < config.malformed_rate:
                    yield Malformed(
                        f"synthetic:{uid}:{sequence}",
                        f'{{"type": "search", "user_id": "{uid}", "ts": "yesterday"}}',
                        "ts: not an integer",
                        event.ts,
                    )
            sequence += 1


def _session(
    config: SyntheticConfig,
    rng: random.Random,
    uid: str,
    liked: list[tuple[str, str]],
    clock: int,
    request_id: str,
) -> Iterator[SearchEvent | ClickEvent | HintExposureEvent | HintClickEvent]:
    # The exposure mixes queries of liked leaves with one of a random leaf, in random order.
    candidates = [leaf_query(leaf, rng) for leaf in liked[: HINTS_SHOWN - 1]]
    candidates.append(leaf_query(rng.choice(LEAVES), rng))
    candidates = list(dict.fromkeys(candidates))
    rng.shuffle(candidates)
    shown = tuple(
        ShownQuery(query=q, source=rng.choice(("u2q", "x2q", "popular")), position=i)
        for i, q in enumerate(candidates)
    )
    yield HintExposureEvent(user_id=uid, ts=clock, request_id=request_id, shown=shown)
    liked_words = {word for leaf in liked for word in _vocabulary(leaf)}
    for hint in shown:
        if set(hint.query.lower().split()) & liked_words and rng.random() < config.hint_click_rate:
            clock += rng.randrange(2_000, 15_000)
            yield HintClickEvent(
                user_id=uid,
                ts=clock,
                request_id=request_id,
                query=hint.query,
                source=hint.source,
                position=hint.position,
            )
            break
    for _ in range(_count(rng, config.searches_per_session, at_least=1)):
        leaf = rng.choice(liked)
        clock += rng.randrange(5_000, 120_000)
        yield SearchEvent(user_id=uid, ts=clock, query=leaf_query(leaf, rng), session_id=request_id)
        for _ in range(_count(rng, config.clicks_per_search, at_least=0)):
            clock += rng.randrange(3_000, 60_000)
            item_id, title = item_title(leaf, rng.randrange(18))
            yield ClickEvent(
                user_id=uid,
                ts=clock,
                item_id=item_id,
                item_text=title,
                category=leaf,
                session_id=request_id,
            )


def _drift(
    liked: list[tuple[str, str]], rng: random.Random, chance: float
) -> list[tuple[str, str]]:
    """Maybe replace one liked leaf: by a sibling two times in three, else by any leaf."""
    if rng.random() >= chance:
        return liked
    out = rng.randrange(len(liked))
    root = liked[out][0]
    siblings = [(root, leaf) for leaf in CATALOG[root] if (root, leaf) not in liked]
    others = [leaf for leaf in LEAVES if leaf not in liked]
    pool = siblings if siblings and rng.random() < 2 / 3 else others
    if not pool:
        return liked
    return [*liked[:out], rng.choice(pool), *liked[out + 1 :]]


def _vocabulary(leaf: tuple[str, str]) -> set[str]:
    brands, adjectives, nouns = CATALOG[leaf[0]][leaf[1]]
    return {word.lower() for phrase in (*brands, *adjectives, *nouns) for word in phrase.split()}


def _count(rng: random.Random, mean: float, at_least: int) -> int:
    """A small non-negative count with the given mean (geometric), floored at ``at_least``."""
    extra_mean = max(mean - at_least, 0.0)
    if extra_mean == 0.0:
        return at_least
    stop = 1.0 / (1.0 + extra_mean)  # geometric on {0, 1, ...} with mean extra_mean
    count = at_least
    while rng.random() >= stop:
        count += 1
    return count
