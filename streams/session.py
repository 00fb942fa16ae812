"""Rolling per-user session state, and how one event changes it: pure functions on plain data.

A :class:`Session` holds what the trigger policy and the prompt builder need of a user:

- ``recent``: the last N behaviours (searches, clicks, hint clicks) inside a time window, oldest
  first, each ``[ts, kind, text, category]``;
- ``profile``: a time-decayed interest profile over features ``t:<term>`` (query and title
  words) and ``c:<category>`` (category path levels, or a URL's host). Weights are stored
  *scaled*: an event at time ``ts`` adds ``2 ** ((ts - profile_ts) / half_life)``, which is the
  same as decaying every older weight by the half-life, without touching them. Rankings and
  cosine similarities do not care about the common scale; the scale is folded back in
  (``profile_ts`` moves) before it grows large;
- ``version``: how many events were applied (monotonic); ``counts`` by kind; ``offsets``: per
  source *partition* (``"<topic>/<partition>"``), the partition's incarnation (epoch) and the
  last offset applied in it, so a re-delivered record is recognised and skipped, and a record
  of a partition that was reset (a new epoch) is not; ``seqs``: per replay stream, the last
  event sequence number applied (event ids ``<stream>#<n>``), so a file replayed twice counts
  once;
- ``trigger_ts`` / ``trigger_fp`` / ``trigger_profile``: when the last regeneration was triggered
  and a fingerprint and snapshot of the profile it used (drift is measured against it);
- ``history``: the user's searches folded into a bounded table of normalised query ->
  ``[count, last time]`` (:mod:`cache.history`; unlike ``recent``, never cut by the window):
  what the read path and the generator's prompt take as the user's own frequent queries.

Everything is event-time based, so the state is a pure function of the events applied.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

import orjson

from aigq.events import EventType
from cache.history import MAX_HISTORY, add_search

BEHAVIOURS = ("search", "click", "hint_click")
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
# Words that say nothing about an interest.
_STOP_WORDS = (
    "a an and the of for in on to with by at from or is are be my your how what where who"
    " www com net org http https html htm"
)
_STOP = frozenset(_STOP_WORDS.split())
MAX_TEXT_CHARS = 120  # a behaviour's text as kept in the state (and sent to the generator)
_RESCALE_AT = 1e12  # fold the scale back in before floats lose precision
_RESCALE_EXP = math.log2(_RESCALE_AT)  # the same, as half-lives
MAX_SEQ_STREAMS = 16  # replay streams (one per event type of a replay) a session remembers


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """How much of a user's past the session keeps."""

    max_recent: int = 20
    """the last N behaviours kept"""
    window_ms: int = 7 * 86_400_000
    """behaviours older than this (before the user's latest event) are dropped"""
    half_life_ms: int = 86_400_000
    """interest profile half-life in event time"""
    max_features: int = 64
    """profile features kept (the weakest are pruned beyond 1.5x this)"""
    snapshot_features: int = 24
    """profile features kept as the snapshot a trigger is measured against"""
    max_history: int = MAX_HISTORY
    """distinct queries kept in the search history (the weakest go first)"""

    def __post_init__(self) -> None:
        for name in ("max_recent", "window_ms", "half_life_ms", "max_features"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 1 <= self.max_history <= MAX_HISTORY:
            raise ValueError(f"max_history must be in 1..{MAX_HISTORY}, got {self.max_history}")
        if not 1 <= self.snapshot_features <= self.max_features:
            raise ValueError("snapshot_features must be in 1..max_features")


@dataclass(slots=True)
class Session:
    user_id: str
    version: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    offsets: dict[str, list[int]] = field(default_factory=dict)  # "topic/p" -> [epoch, offset]
    seqs: dict[str, int] = field(default_factory=dict)  # replay stream -> last sequence applied
    recent: list[list[Any]] = field(default_factory=list)
    profile: dict[str, float] = field(default_factory=dict)
    profile_ts: int = 0
    last_ts: int = 0
    trigger_ts: int | None = None
    trigger_fp: str = ""
    trigger_profile: dict[str, float] = field(default_factory=dict)  # unit length (L2)
    norm2: float = 0.0  # sum of squared profile weights, kept up to date
    dot: float = 0.0  # profile . trigger_profile, kept up to date
    history: dict[str, list[int]] = field(default_factory=dict)  # query -> [count, last ts]

    @property
    def shift(self) -> float:
        """Cosine distance between the profile now and at the last trigger (1.0: none yet)."""
        if not self.trigger_profile or self.norm2 <= 0.0:
            return 1.0
        return min(1.0, max(0.0, 1.0 - self.dot / math.sqrt(self.norm2)))

    def to_bytes(self) -> bytes:
        return orjson.dumps(self)

    @classmethod
    def from_bytes(cls, data: bytes) -> Session:
        fields = orjson.loads(data)
        # States written before offsets were kept per partition hold one offset per topic,
        # which cannot be mapped to a partition: they are dropped (the records since the last
        # commit may then be applied again, once, at the upgrade).
        offsets = fields.get("offsets") or {}
        fields["offsets"] = {k: v for k, v in offsets.items() if type(v) is list}
        return cls(**fields)

    def seen(self, where: str, epoch: int, offset: int) -> bool:
        """Whether the record at ``offset`` of source partition ``where`` (in its incarnation
        ``epoch``) is already in this state; if not, it is recorded as applied."""
        last = self.offsets.get(where)
        if last is not None and last[0] == epoch and offset <= last[1]:
            return True
        self.offsets[where] = [epoch, offset]
        return False

    def seen_seq(self, stream: str, seq: int) -> bool:
        """Whether event ``seq`` of replay stream ``stream`` is already in this state; if not,
        it is recorded. A user's events of one stream come in sequence order (the replay numbers
        each event type apart, and one type is one topic, read in order); the newest
        :data:`MAX_SEQ_STREAMS` streams are remembered."""
        last = self.seqs.get(stream)
        if last is not None and seq <= last:
            return True
        if last is None and len(self.seqs) >= MAX_SEQ_STREAMS:
            del self.seqs[next(iter(self.seqs))]  # the stream seen first
        self.seqs[stream] = seq
        return False


def features(kind: str, text: str, category: Sequence[str]) -> dict[str, float]:
    """The profile features of one behaviour and their weights.

    A search or hint click is about its words; a click is mostly about its category path (every
    level, the leaf strongest) and a little about its title words.
    """
    out: dict[str, float] = {}
    word_weight = 1.0 if kind != "click" else 0.3
    for word in _WORD.findall(text.lower()):
        if len(word) > 1 and word not in _STOP and not word.isdigit():
            out[f"t:{word}"] = word_weight
    depth = len(category)
    for level, name in enumerate(category, start=1):
        out[f"c:{name.lower()}"] = level / depth
    return out


def category_of(category: Sequence[str]) -> str:
    """The category a behaviour counts under for novelty: its path, ``>``-joined."""
    return ">".join(category)


def apply_event(
    session: Session,
    config: SessionConfig,
    kind: EventType,
    ts: int,
    text: str,
    category: Sequence[str],
) -> None:
    """Fold one event into the session, in place. ``text`` is the query or the item's text."""
    session.version += 1
    session.counts[kind] = session.counts.get(kind, 0) + 1
    session.last_ts = max(session.last_ts, ts)
    if kind not in BEHAVIOURS:
        return
    if kind == "search":
        add_search(session.history, text, ts, config.max_history)
    _add_recent(session, config, [ts, kind, text[:MAX_TEXT_CHARS], category_of(category)])
    _add_profile(session, config, ts, features(kind, text, category))


def _add_recent(session: Session, config: SessionConfig, behaviour: list[Any]) -> None:
    recent = session.recent
    if recent and behaviour[0] < recent[-1][0]:  # out of order (another topic): keep time order
        bisect.insort_right(recent, behaviour, key=itemgetter(0))
    else:
        recent.append(behaviour)
    horizon = session.last_ts - config.window_ms
    cut = max(len(recent) - config.max_recent, 0)
    while cut < len(recent) and recent[cut][0] < horizon:
        cut += 1
    if cut:
        del recent[:cut]


def _add_profile(session: Session, config: SessionConfig, ts: int, add: dict[str, float]) -> None:
    # The norm and the dot product with the trigger snapshot move with each touched feature,
    # so drift costs O(features of this event), not O(profile).
    if not session.profile:
        session.profile_ts = ts
    half_lives = (ts - session.profile_ts) / config.half_life_ms
    if half_lives > _RESCALE_EXP:
        # Fold the scale back in as a factor below 1, never as 2 ** half_lives: a user back
        # after years is thousands of half-lives on (2.0 ** 1100 overflows). Older weights
        # that underflow to 0 have decayed to nothing, which is what they are worth.
        fold = 2.0**-half_lives
        session.profile = {k: w * fold for k, w in session.profile.items()}
        session.norm2 *= fold * fold
        session.dot *= fold
        session.profile_ts, half_lives = ts, 0.0
    # An event far older than the profile adds (almost) nothing: 2 ** -x underflows to 0.
    scale = 2.0**half_lives
    profile, snapshot = session.profile, session.trigger_profile
    norm2, dot = session.norm2, session.dot
    for feature, weight in add.items():
        old = profile.get(feature, 0.0)
        new = old + weight * scale
        profile[feature] = new
        norm2 += new * new - old * old
        dot += snapshot.get(feature, 0.0) * (new - old)
    session.norm2, session.dot = norm2, dot
    if len(profile) > config.max_features * 3 // 2:
        session.profile = dict(_strongest(profile, config.max_features))
        _recompute(session)


def _strongest(weights: dict[str, float], n: int) -> list[tuple[str, float]]:
    return sorted(weights.items(), key=itemgetter(1), reverse=True)[:n]


def _recompute(session: Session) -> None:
    profile = session.profile
    session.norm2 = sum(w * w for w in profile.values())
    session.dot = sum(u * profile.get(k, 0.0) for k, u in session.trigger_profile.items())


def top_features(profile: dict[str, float], n: int) -> list[tuple[str, float]]:
    """The ``n`` strongest features, strongest first, weights normalised to sum to 1."""
    top = _strongest(profile, n)
    total = sum(w for _, w in top) or 1.0
    return [(k, w / total) for k, w in top]


def cosine_distance(a: dict[str, float], b: dict[str, float]) -> float:
    """1 - cosine similarity; 1.0 when either is empty."""
    if not a or not b:
        return 1.0
    small, large = (a, b) if len(a) <= len(b) else (b, a)
    dot = sum(w * large.get(k, 0.0) for k, w in small.items())
    norm = math.sqrt(sum(w * w for w in a.values()) * sum(w * w for w in b.values()))
    return max(0.0, 1.0 - dot / norm) if norm else 1.0


def fingerprint(snapshot: dict[str, float]) -> str:
    """A short stable id of a profile snapshot's strongest features (order-insensitive)."""
    keys = sorted(k for k, _ in _strongest(snapshot, 8))
    return hashlib.blake2b("\n".join(keys).encode(), digest_size=8).hexdigest()


def restore_baseline(session: Session, baseline: tuple[int | None, str, dict[str, float]]) -> None:
    """Put back the trigger baseline ``(trigger_ts, trigger_fp, trigger_profile)`` a session had
    (a trigger that was recorded, then deferred: see :mod:`streams.processor`)."""
    session.trigger_ts, session.trigger_fp, session.trigger_profile = baseline
    profile = session.profile
    session.dot = sum(profile.get(k, 0.0) * w for k, w in session.trigger_profile.items())


def mark_triggered(session: Session, config: SessionConfig, ts: int) -> None:
    """Record that a regeneration was triggered at event time ``ts`` from the current profile."""
    top = _strongest(session.profile, config.snapshot_features)
    length = math.sqrt(sum(w * w for _, w in top)) or 1.0
    session.trigger_ts = ts
    session.trigger_profile = {k: w / length for k, w in top}
    session.trigger_fp = fingerprint(session.trigger_profile)
    session.dot = length  # sum of w * (w / length) over the snapshot's features
