"""IL-SFT samples from event streams: pure functions over events, whatever they were read from.

Three session kinds (paper, "Samples"), each a :class:`Sample` of a :class:`Context` (what the
user did before the cut) and an interest-ordered label list:

- :func:`direct_samples` (AIGQ-Direct): one hint exposure with at least one clicked hint; labels
  are the clicked hints, then the exposure's other shown queries by position.
- :func:`think_samples` (AIGQ-Think): one user-day (UTC), from the day's first search to its
  last event; labels are the day's clicked hints, then its searches by interest strength, then
  the queries it was shown, then an optional generator's candidates.
- :func:`proxy_samples` / :func:`last_search_samples`: logs without hint exposures (AOL, Best
  Buy); labels are the searches after a cut, by interest strength. The evaluation proxy task.

The context is the worker's own session state: the events before the cut are folded through
:func:`streams.session.apply_event` with the worker's :class:`~streams.session.SessionConfig`,
so :meth:`Context.request` is the regeneration request the session agent would have sent and
:meth:`Context.prompt` is :func:`generators.requests.prompt_for` on it: one prompt builder for
serving and training. :func:`render_target` is the one label-list-to-text rendering.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Literal, TypeAlias

from aigq.datasets.base import Malformed, SourceItem
from aigq.events import (
    MAX_REQUEST_HISTORY,
    ClickEvent,
    HintClickEvent,
    HintExposureEvent,
    RegenerationRequest,
    SearchEvent,
)
from cache.history import top_queries
from cache.text import normalize
from generators.output import parse_queries
from generators.prompt import Behaviour, clean_text, format_target, history_queries
from generators.requests import prompt_for
from streams.session import Session, SessionConfig, apply_event, mark_triggered, top_features
from training import TargetOrder, TrainingError

DAY_MS = 86_400_000
REQUEST_PROFILE_FEATURES = 16
"""Profile features a regeneration request carries (``streams.processor`` sends 16)."""

AnyEvent: TypeAlias = SearchEvent | ClickEvent | HintExposureEvent | HintClickEvent
SampleKind = Literal["direct", "think", "proxy"]


def query_key(query: str) -> str:
    """What "the same query" means offline: the text as the model can say it
    (:func:`~generators.prompt.clean_text`, uncut), then the read path's normal form
    (:func:`cache.text.normalize`: NFKC, case-folded, single spaces)."""
    return normalize(clean_text(query, max_chars=sys.maxsize))


@dataclass(frozen=True, slots=True)
class Context:
    """A user's state just before ``cut_ms``; nothing at or after the cut is in it.

    ``recent`` and ``profile`` are what the session agent keeps and a regeneration request
    carries; ``searches`` are the user's last searches before the cut, oldest first (for the
    baselines); ``version`` counts the events folded in; ``last_ts`` is the newest one's time;
    ``history`` is the user's most searched queries, strongest first, from the worker's own
    fold (:mod:`cache.history`), as many as a prompt shows.
    """

    user_id: str
    cut_ms: int
    recent: tuple[Behaviour, ...]
    profile: tuple[tuple[str, float], ...]
    searches: tuple[str, ...]
    version: int
    fingerprint: str
    last_ts: int
    history: tuple[str, ...] = ()
    searched: tuple[tuple[str, int, int], ...] = ()
    """``(query, times searched, last searched ms)`` of each ``history`` query, from the same
    fold (what the CTR model's features read; :mod:`training.grpo_data`)"""

    @property
    def now_ms(self) -> int:
        """The request's event time: the newest behaviour's, as when the worker fired on it."""
        return self.last_ts or self.cut_ms

    def request(self) -> RegenerationRequest:
        """The regeneration request of this state (``reason`` and ``shift`` are nominal)."""
        return RegenerationRequest(
            user_id=self.user_id,
            version=max(self.version, 1),
            reason="cold_start",
            shift=1.0,
            event_ts=self.now_ms,
            created_ts=self.now_ms,
            fingerprint=self.fingerprint,
            recent=self.recent,
            profile=self.profile,
            history=self.history,
        )

    def prompt(self, k: int = 10, compressed: bool = True) -> str:
        """The generator worker's prompt for this state."""
        return prompt_for(self.request(), k, compressed)


@dataclass(frozen=True, slots=True)
class Sample:
    """One training or evaluation example.

    ``labels`` are distinct (by :func:`query_key`), strongest interest first; ``next_query`` is
    the user's first search at or after the cut (None when there is none).
    """

    kind: SampleKind
    context: Context
    labels: tuple[str, ...]
    next_query: str | None

    def prompt(self, k: int = 10) -> str:
        return self.context.prompt(k)

    def target(self, k: int = 10, order: TargetOrder = "shown") -> str:
        """The model's target text. A proxy sample's labels are put in :func:`history_first`
        order (``order="shown"``) or :func:`recurring_first` order (``"recurring"``); the
        other kinds' labels are already a ranked list."""
        shown = history_queries(self.context.history)  # what the prompt's copy tokens show
        if self.kind == "proxy":
            rank = history_first if order == "shown" else recurring_first
            return render_target(rank(self.labels, self.context.history, k), k, shown)
        return render_target(self.labels, k, shown)


@dataclass(frozen=True)
class SampleConfig:
    """How samples are cut from a log."""

    session: SessionConfig = field(default_factory=SessionConfig)
    """what the session agent keeps of a user (the worker's ``AIGQ_STREAM_*`` settings)"""
    window_ms: int = 7 * DAY_MS
    """the proxy task's label window after the cut"""
    max_labels: int = 30
    """labels kept per sample (the paper's offline metrics are taken @30)"""
    min_context: int = 1
    """behaviours (searches, clicks, hint clicks) needed before the cut, else no sample"""
    max_history: int = 1_000
    """past searches a context keeps for the baselines, the most recent"""

    def __post_init__(self) -> None:
        for name in ("window_ms", "max_labels", "max_history"):
            if getattr(self, name) < 1:
                raise TrainingError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.min_context < 0:
            raise TrainingError(f"min_context must be >= 0, got {self.min_context}")


def render_target(queries: Sequence[str], k: int = 10, shown: Sequence[str] = ()) -> str:
    """The label list as the model's output text: what :func:`generators.output.parse_queries`
    gives back unchanged (with ``shown``, the prompt's history queries, a label that is one of
    them is written as its copy token, ``<h2>``, which the parser expands back).

    Labels the parser would drop (too long, too many words, near-duplicates, ``;;`` inside)
    are left out rather than cut, so the model never learns a truncated query; at most ``k``.
    """
    if k < 1:
        raise TrainingError(f"k must be >= 1, got {k}")
    pieces = (clean_text(q, max_chars=sys.maxsize) for q in queries)
    kept = parse_queries("\n".join(p for p in pieces if ";;" not in p), k=k)
    while True:  # a label such as "1. 2. x" loses one list marker per parse: reach the fixpoint
        again = parse_queries(format_target(kept), k=k) if kept else []
        if again == kept:
            return format_target(kept, shown)
        kept = again


def history_first(
    labels: Sequence[str], history: Sequence[str], k: int = 10, new_slots: int = 3
) -> list[str]:
    """A proxy target in an order a small model can learn: the first ``k - new_slots`` history
    queries the prompt shows (:func:`~generators.prompt.history_queries`), in its order; then
    up to ``new_slots`` labels not among them (new to the user, or deeper in the history), in
    label order; then the rest of the shown history.

    Why: on a web log most of what a user searches next they searched before, and which of
    their frequent queries come back is hard to tell from the prompt. A target that starts
    with a plain copy of the history's head (the user-frequency baseline's best guesses) is
    learnt quickly, token for token, by a small model from scratch, where a target ordered by
    what the label day happened to repeat is not (it learns a blur of common words); the
    last slots teach it to put its own guesses there, and every target is a full list long,
    where a day's labels alone are two queries on the median.
    """
    _check_slots(k, new_slots)
    shown = history_queries(history)
    new_slots = min(new_slots, k)
    return _then_new_then_rest(shown[: k - new_slots], labels, shown, new_slots)


def recurring_first(
    labels: Sequence[str], history: Sequence[str], k: int = 10, new_slots: int = 3
) -> list[str]:
    """Like :func:`history_first`, but the history queries the labels repeat come first: the
    shown history queries among the labels (in the prompt's order), then up to ``new_slots``
    labels not among them, then the rest of the shown history, at most ``k``.

    Why: with copy tokens a copy is one token, so the model can afford to learn *which* of
    the user's queries come back (from the times and behaviours the prompt shows) rather
    than the prompt's order, which is the user-frequency baseline's.
    """
    _check_slots(k, new_slots)
    shown = history_queries(history)
    wanted = {query_key(label) for label in labels}
    recurring = [query for query in shown if query_key(query) in wanted]
    return _then_new_then_rest(recurring, labels, shown, new_slots)[:k]


def _check_slots(k: int, new_slots: int) -> None:
    if k < 1 or new_slots < 0:
        raise TrainingError(f"need k >= 1 and new_slots >= 0, got {k} and {new_slots}")


def _then_new_then_rest(
    head: list[str], labels: Sequence[str], shown: Sequence[str], new_slots: int
) -> list[str]:
    """``head``, then up to ``new_slots`` labels not in it, then the rest of ``shown``."""
    seen = {query_key(query) for query in head}
    new = [label for label in labels if query_key(label) not in seen][:new_slots]
    seen |= {query_key(label) for label in new}
    return head + new + [query for query in shown if query_key(query) not in seen]


def group_by_user(items: Iterable[SourceItem]) -> dict[str, list[AnyEvent]]:
    """Each user's events in time order (stable: equal times keep their order); malformed
    records are skipped."""
    users: dict[str, list[AnyEvent]] = {}
    for item in items:
        if not isinstance(item, Malformed):
            users.setdefault(item.user_id, []).append(item)
    for events in users.values():
        events.sort(key=attrgetter("ts"))
    return users


def rank_searches(window: Sequence[AnyEvent]) -> list[str]:
    """The window's searches by interest strength: times searched, then clicks that followed
    them (before the next search), then first occurrence. Each query once, as first typed."""
    count: dict[str, int] = {}
    clicks: dict[str, int] = {}
    text: dict[str, str] = {}
    current: str | None = None
    for event in window:
        if isinstance(event, SearchEvent):
            current = query_key(event.query)
            if not current:
                continue
            text.setdefault(current, event.query)
            count[current] = count.get(current, 0) + 1
        elif isinstance(event, ClickEvent) and current:
            clicks[current] = clicks.get(current, 0) + 1
        elif isinstance(event, HintClickEvent):
            current = None
    order = {key: i for i, key in enumerate(text)}
    ranked = sorted(text, key=lambda key: (-count[key], -clicks.get(key, 0), order[key]))
    return [text[key] for key in ranked]


def _ranked_shown(exposures: Sequence[HintExposureEvent]) -> list[str]:
    """Shown queries as the ranker ordered them: best position, then times shown, then first."""
    best: dict[str, tuple[int, int, int]] = {}
    text: dict[str, str] = {}
    for exposure in exposures:
        for shown in exposure.shown:
            key = query_key(shown.query)
            position, times, first = best.get(key, (shown.position, 0, len(best)))
            best[key] = (min(position, shown.position), times + 1, first)
            text.setdefault(key, shown.query)
    ranked = sorted(best, key=lambda key: (best[key][0], -best[key][1], best[key][2]))
    return [text[key] for key in ranked]


def _labels(lists: Iterable[Iterable[str]], max_labels: int) -> tuple[str, ...]:
    """The lists one after the other, each query once (by :func:`query_key`)."""
    out: list[str] = []
    seen: set[str] = set()
    for queries in lists:
        for query in queries:
            key = query_key(query)
            if key and key not in seen:
                seen.add(key)
                out.append(query)
                if len(out) == max_labels:
                    return tuple(out)
    return tuple(out)


class _Folder:
    """One user's events folded into the worker's session state in time order, cut by cut.

    Cuts must not go back in time: each event is folded once.
    """

    def __init__(self, user_id: str, events: Sequence[AnyEvent], config: SampleConfig) -> None:
        self.events = events
        self.config = config
        self.position = 0  # events[:position] are folded
        self.session = Session(user_id)
        self.searches: list[str] = []
        self.behaviours = 0

    def context(self, cut_ms: int) -> Context | None:
        """The state before ``cut_ms``; None with fewer than ``min_context`` behaviours."""
        events, session, config = self.events, self.session, self.config
        while self.position < len(events) and events[self.position].ts < cut_ms:
            self._fold(events[self.position])
            self.position += 1
        if self.behaviours < config.min_context:
            return None
        mark_triggered(session, config.session, session.last_ts)  # trigger fields only
        history = tuple(top_queries(session.history, MAX_REQUEST_HISTORY))
        return Context(
            user_id=session.user_id,
            cut_ms=cut_ms,
            recent=tuple((int(t), str(k), str(x), str(c)) for t, k, x, c in session.recent),
            profile=tuple(top_features(session.trigger_profile, REQUEST_PROFILE_FEATURES)),
            searches=tuple(self.searches[-config.max_history :]),
            version=session.version,
            fingerprint=session.trigger_fp,
            last_ts=session.last_ts,
            history=history,
            searched=tuple((q, int(session.history[q][0]), int(session.history[q][1]))
                           for q in history),
        )  # fmt: skip

    def next_search(self) -> str | None:
        """The first search not folded yet."""
        for event in self.events[self.position :]:
            if isinstance(event, SearchEvent):
                return event.query
        return None

    def _fold(self, event: AnyEvent) -> None:
        text = ""
        category: tuple[str, ...] = ()
        if isinstance(event, SearchEvent | HintClickEvent):
            text = event.query
            self.behaviours += 1
            if isinstance(event, SearchEvent):
                self.searches.append(event.query)
        elif isinstance(event, ClickEvent):
            text, category = event.item_text, event.category
            self.behaviours += 1
        apply_event(self.session, self.config.session, event.type, event.ts, text, category)
        if len(self.searches) > 2 * self.config.max_history:
            del self.searches[: -self.config.max_history]


def direct_samples(items: Iterable[SourceItem], config: SampleConfig | None = None) -> list[Sample]:
    """AIGQ-Direct samples: one per hint exposure that got at least one hint click.

    A click counts for the exposure with its ``request_id`` when it is not earlier than the
    exposure (so it can never also be in the context). Labels: the clicked queries in click
    order, then the exposure's other queries by position. Users in first-seen order.
    """
    config = config or SampleConfig()
    out: list[Sample] = []
    for user_id, events in group_by_user(items).items():
        clicks: dict[str, list[HintClickEvent]] = {}
        for event in events:
            if isinstance(event, HintClickEvent):
                clicks.setdefault(event.request_id, []).append(event)
        folder = _Folder(user_id, events, config)
        seen: set[str] = set()
        for exposure in events:
            if not isinstance(exposure, HintExposureEvent) or exposure.request_id in seen:
                continue
            seen.add(exposure.request_id)
            clicked = [c.query for c in clicks.get(exposure.request_id, ()) if c.ts >= exposure.ts]
            context = folder.context(exposure.ts) if clicked else None
            if context is None:
                continue
            shown = [s.query for s in sorted(exposure.shown, key=attrgetter("position"))]
            labels = _labels([clicked, shown], config.max_labels)
            if labels:
                out.append(Sample("direct", context, labels, folder.next_search()))
    return out


def think_samples(
    items: Iterable[SourceItem],
    config: SampleConfig | None = None,
    generator: Callable[[Context], Sequence[str]] | None = None,
) -> list[Sample]:
    """AIGQ-Think samples: one per user-day (UTC) with a search, from its first search to its
    last event; the context is everything before that first search.

    Labels: the day's clicked hints (click order), its searches by interest strength
    (:func:`rank_searches`), the queries it was shown (best position first), then
    ``generator(context)``'s candidates (an LLM, which should also do the paper's alignment
    filtering). The teacher's reasoning trace and trigger sets are not built here.
    """
    config = config or SampleConfig()
    out: list[Sample] = []
    for user_id, events in group_by_user(items).items():
        folder = _Folder(user_id, events, config)
        for day in _days(events):
            start = next((i for i, e in enumerate(day) if isinstance(e, SearchEvent)), None)
            if start is None:
                continue
            window = day[start:]
            context = folder.context(window[0].ts)
            if context is None:
                continue
            hint_clicks = [e.query for e in window if isinstance(e, HintClickEvent)]
            exposures = [e for e in window if isinstance(e, HintExposureEvent)]
            lists = [hint_clicks, rank_searches(window), _ranked_shown(exposures)]
            if generator is not None:
                lists.append(list(generator(context)))
            labels = _labels(lists, config.max_labels)
            if labels:
                out.append(Sample("think", context, labels, folder.next_search()))
    return out


def _days(events: Sequence[AnyEvent]) -> list[Sequence[AnyEvent]]:
    """Time-ordered events split into UTC days."""
    days: list[Sequence[AnyEvent]] = []
    start = 0
    for i in range(1, len(events) + 1):
        if i == len(events) or events[i].ts // DAY_MS != events[start].ts // DAY_MS:
            days.append(events[start:i])
            start = i
    return days


def proxy_samples(
    items: Iterable[SourceItem], cut_ms: int, config: SampleConfig | None = None
) -> list[Sample]:
    """The proxy task at one cut for every user: context before ``cut_ms``, labels the searches
    in ``[cut_ms, cut_ms + window_ms)`` by interest strength. Users without a search in the
    window (or without enough context) give no sample."""
    config = config or SampleConfig()
    out: list[Sample] = []
    for user_id, events in group_by_user(items).items():
        sample = _proxy(user_id, events, cut_ms, cut_ms + config.window_ms, config)
        if sample is not None:
            out.append(sample)
    return out


def rolling_proxy_samples(
    items: Iterable[SourceItem], config: SampleConfig | None = None, every_ms: int = 7 * DAY_MS
) -> list[Sample]:
    """The proxy task at every ``every_ms`` (UTC-day aligned) through each user's log: one
    sample per cut with a search in the window after it. Training data shaped exactly like the
    evaluation's (:func:`proxy_samples`) but from many cuts; give it only events before the
    evaluation cut (:func:`training.split.split_events` does), so no window reaches past it."""
    config = config or SampleConfig()
    if every_ms < DAY_MS:
        raise TrainingError(f"every_ms must be at least a day, got {every_ms}")
    out: list[Sample] = []
    for user_id, events in group_by_user(items).items():
        if not events:
            continue
        folder = _Folder(user_id, events, config)
        cut = (events[0].ts // DAY_MS + 1) * DAY_MS
        while cut <= events[-1].ts:
            end = cut + config.window_ms
            window = [e for e in events if cut <= e.ts < end]
            labels = _labels([rank_searches(window)], config.max_labels)
            context = folder.context(cut) if labels else None
            if context is not None:
                out.append(Sample("proxy", context, labels, folder.next_search()))
            cut += every_ms
    return out


def last_search_samples(
    items: Iterable[SourceItem], config: SampleConfig | None = None
) -> list[Sample]:
    """The proxy task cut at each user's last search (the data README's next-query protocol):
    the label is that search (and any other at the same moment)."""
    config = config or SampleConfig()
    out: list[Sample] = []
    for user_id, events in group_by_user(items).items():
        searches = [e.ts for e in events if isinstance(e, SearchEvent)]
        if searches:
            sample = _proxy(user_id, events, searches[-1], searches[-1] + 1, config)
            if sample is not None:
                out.append(sample)
    return out


def _proxy(
    user_id: str, events: Sequence[AnyEvent], cut_ms: int, end_ms: int, config: SampleConfig
) -> Sample | None:
    window = [e for e in events if cut_ms <= e.ts < end_ms]
    labels = _labels([rank_searches(window)], config.max_labels)
    if not labels:
        return None
    folder = _Folder(user_id, events, config)
    context = folder.context(cut_ms)
    if context is None:
        return None
    return Sample("proxy", context, labels, folder.next_search())
