"""CTR examples from event streams: one labelled row per (hint exposure, shown query). Pure.

:func:`examples` reads what the trainer logs (searches, clicks, hint exposures, hint clicks)
and gives one :class:`CtrExample` per query a :class:`~aigq.events.HintExposureEvent` showed,
labelled 1 when a :class:`~aigq.events.HintClickEvent` of the same user names the same
``request_id`` and the same position (or the same query, by
:func:`~training.samples.query_key`), else 0. Its context is the user's behaviour **before**
the exposure (earlier in the user's time-ordered stream; events are on one clock), folded
by :class:`UserState`, which is also how a caller that scores generated queries (IL-GRPO's
reward) builds a context: fold the user's events, then :meth:`UserState.example`.

Logs without exposures (AOL, the synthetic log) get them from :func:`simulated_feedback`:
at each search of a user with some history, the list the read API would serve with no
generated list (:func:`training.served.served_list`: the user's history, then the popular
queries), shown just before that search; the click model of :mod:`streams.simulator`
decides from that search which shown query (if any) the user clicks.

:func:`split_by_day` trains on exposures before a cut and tests on the later days.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter

from aigq.events import ClickEvent, HintClickEvent, HintExposureEvent, SearchEvent, ShownQuery
from cache.compose import Hint
from cache.history import MAX_HISTORY, History, add_search, top_queries
from cache.settings import HintSettings
from cache.text import MAX_KEY_CHARS, normalize
from streams.simulator import SimulatorSettings, decide
from training import TrainingError
from training.samples import DAY_MS, AnyEvent, query_key
from training.served import served_list

RECENT_N = 8
"""behaviours (searches, clicks, hint clicks) a context keeps, the newest"""
HISTORY_N = 10
"""the user's top history queries a context keeps (what the read API serves: AIGQ_HINTS_HISTORY)"""


@dataclass(frozen=True, slots=True)
class UserContext:
    """What a user had done before ``now_ms``; shared by the examples of one exposure.

    ``recent``: the texts of the last behaviours (search queries, clicked items' texts, clicked
    hints), oldest first; ``last_search``: the newest search ("" when none); ``searches``: how
    many searches so far; ``history``: the user's strongest past queries, normalised
    (:func:`cache.history.top_queries` of the worker's own fold).
    """

    user_id: str
    now_ms: int
    recent: tuple[str, ...]
    last_search: str
    searches: int
    history: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CtrExample:
    """One shown query in its context, with its label.

    ``times_searched`` / ``last_searched_ms``: how often and when the user had searched this
    very query (by :func:`~training.samples.query_key`) before ``context.now_ms`` (None: never).
    """

    context: UserContext
    query: str
    position: int
    source: str
    label: int
    times_searched: int = 0
    last_searched_ms: int | None = None
    request_id: str = ""


class UserState:
    """One user's behaviour folded event by event, in time order: what a context reads."""

    def __init__(self, user_id: str, recent_n: int = RECENT_N) -> None:
        if recent_n < 1:
            raise TrainingError(f"recent_n must be >= 1, got {recent_n}")
        self.user_id = user_id
        self.recent: deque[str] = deque(maxlen=recent_n)
        self.last_search = ""
        self.searches = 0
        self.history: History = {}
        self.past: dict[str, tuple[int, int]] = {}  # query_key -> (times searched, last ts)

    def add(self, event: AnyEvent) -> None:
        """Fold one event (exposures change nothing: being shown a query is not behaviour)."""
        if isinstance(event, SearchEvent):
            self.recent.append(event.query)
            self.last_search = event.query
            self.searches += 1
            add_search(self.history, event.query, event.ts, MAX_HISTORY)
            key = query_key(event.query)
            times, _ = self.past.get(key, (0, 0))
            self.past[key] = (times + 1, event.ts)
        elif isinstance(event, ClickEvent):
            self.recent.append(event.item_text)
        elif isinstance(event, HintClickEvent):
            self.recent.append(event.query)

    def context(self, now_ms: int) -> UserContext:
        """The state as a context at ``now_ms`` (fold only events before it first)."""
        history = tuple(top_queries(self.history, HISTORY_N))
        return UserContext(
            self.user_id, now_ms, tuple(self.recent), self.last_search, self.searches, history
        )

    def example(
        self,
        context: UserContext,
        shown: ShownQuery,
        label: int = 0,
        request_id: str = "",
    ) -> CtrExample:
        """``shown`` in ``context`` (label 0 when scoring), with the user's stats of its query."""
        times, last = self.past.get(query_key(shown.query), (0, None))
        return CtrExample(
            context, shown.query, shown.position, shown.source, label, times, last, request_id
        )


@dataclass(slots=True)
class LabelStats:
    """What :func:`examples` met; every exposure or click left out is counted."""

    exposures: int = 0
    duplicate_exposures: int = 0
    """exposures whose ``request_id`` the user had already had (the first one counts)"""
    hint_clicks: int = 0
    unmatched_clicks: int = 0
    """hint clicks naming no exposure of the user, or a position and query it did not show"""


@dataclass(slots=True)
class FeedbackStats:
    """What :func:`simulated_feedback` made and skipped."""

    exposures: int = 0
    clicks: int = 0
    searches_without_history: int = 0
    """searches with nothing in the user's history yet, so nothing served"""
    source_hint_events: int = 0
    """the log's own exposures and hint clicks, replaced by simulated ones"""


def _time_ordered(events: Sequence[AnyEvent]) -> list[AnyEvent]:
    """Stable: events with one time keep the order they were given in."""
    return sorted(events, key=attrgetter("ts"))


def examples(
    events_by_user: Mapping[str, Sequence[AnyEvent]],
    recent_n: int = RECENT_N,
    stats: LabelStats | None = None,
) -> list[CtrExample]:
    """Every shown query of every exposure, labelled (module docstring), users in the given
    order, each user's exposures in time order. ``stats`` (when given) is counted into."""
    stats = stats if stats is not None else LabelStats()
    out: list[CtrExample] = []
    for user_id, events in events_by_user.items():
        ordered = _time_ordered(events)
        clicks = _clicks(ordered)
        state = UserState(user_id, recent_n)
        seen: set[str] = set()
        for event in ordered:
            if isinstance(event, HintExposureEvent):
                if event.request_id in seen:
                    stats.duplicate_exposures += 1
                    continue
                seen.add(event.request_id)
                stats.exposures += 1
                out += _labelled(state, event, clicks.get(event.request_id, set()))
            state.add(event)
        stats.hint_clicks += sum(isinstance(e, HintClickEvent) for e in ordered)
        stats.unmatched_clicks += _unmatched(ordered)
    return out


def _clicks(events: Sequence[AnyEvent]) -> dict[str, set[int | str]]:
    """request_id -> the clicked positions (ints) and query keys (strs)."""
    clicks: dict[str, set[int | str]] = {}
    for event in events:
        if isinstance(event, HintClickEvent):
            clicks.setdefault(event.request_id, set()).update(
                (event.position, query_key(event.query))
            )
    return clicks


def _labelled(
    state: UserState, exposure: HintExposureEvent, clicked: set[int | str]
) -> list[CtrExample]:
    context = state.context(exposure.ts)
    return [
        state.example(
            context,
            shown,
            int(shown.position in clicked or query_key(shown.query) in clicked),
            exposure.request_id,
        )
        for shown in exposure.shown
    ]


def _unmatched(events: Sequence[AnyEvent]) -> int:
    """Hint clicks that label nothing: no exposure with their request_id shows their position
    or their query."""
    shown: dict[str, set[int | str]] = {}
    for event in events:
        if isinstance(event, HintExposureEvent):
            keys = shown.setdefault(event.request_id, set())
            for item in event.shown:
                keys.update((item.position, query_key(item.query)))
    return sum(
        isinstance(e, HintClickEvent)
        and not {e.position, query_key(e.query)} & shown.get(e.request_id, set())
        for e in events
    )


def split_by_day(
    rows: Sequence[CtrExample], cut_ms: int
) -> tuple[list[CtrExample], list[CtrExample]]:
    """(train, test): exposures before ``cut_ms``, and the ones at or after it."""
    train = [row for row in rows if row.context.now_ms < cut_ms]
    test = [row for row in rows if row.context.now_ms >= cut_ms]
    return train, test


def default_cut(times_ms: Iterable[int], held_out: float = 0.2) -> int:
    """UTC midnight that leaves the last ``held_out`` share of the days spanned (at least one
    day, and at least one day before it) to the test side."""
    if not 0.0 < held_out < 1.0:
        raise TrainingError(f"held_out must be in (0, 1), got {held_out}")
    days = {ts // DAY_MS for ts in times_ms}
    if len(days) < 2:
        raise TrainingError("need events on at least two days to hold the later ones out")
    first, last = min(days), max(days)
    span = last - first + 1
    test_days = min(max(1, round(span * held_out)), span - 1)
    return (last + 1 - test_days) * DAY_MS


def simulated_feedback(
    events_by_user: Mapping[str, Sequence[AnyEvent]],
    settings: SimulatorSettings,
    popular: Sequence[str] = (),
    hints: HintSettings | None = None,
    k: int = 10,
    stats: FeedbackStats | None = None,
) -> dict[str, list[AnyEvent]]:
    """Each user's events with simulated hint exposures and hint clicks added (the log's own
    are replaced, counted in ``stats.source_hint_events``).

    At each search of a user with some history, an exposure of the read API's list
    (:func:`~training.served.served_list` with no u2q run and no x2q: the user's history, then
    ``popular``; ``k`` queries) is shown at the search's time, just before it; the user
    simulator (:func:`streams.simulator.decide`) clicks the shown query that search matches,
    or none, and a click goes between the exposure and the search. Draws come from a
    generator seeded by ``settings.seed`` and the user id, so a user's feedback does not
    depend on which other users are in the run.
    """
    hints = hints or HintSettings()
    stats = stats if stats is not None else FeedbackStats()
    out: dict[str, list[AnyEvent]] = {}
    for user_id, events in events_by_user.items():
        rng = random.Random(f"{settings.seed}:{user_id}")
        history: History = {}
        stream: list[AnyEvent] = []
        for event in _time_ordered(events):
            if isinstance(event, HintExposureEvent | HintClickEvent):
                stats.source_hint_events += 1
                continue
            if isinstance(event, SearchEvent):
                if history:
                    mine = top_queries(history, hints.history)
                    served = served_list(None, (), {}, popular, hints, k, mine)
                    stream += _exposure(event, served, len(stream), settings, rng, stats)
                else:
                    stats.searches_without_history += 1
                add_search(history, event.query, event.ts, MAX_HISTORY)
            stream.append(event)
        out[user_id] = stream
    return out


def _exposure(
    search: SearchEvent,
    served: Sequence[Hint],
    number: int,
    settings: SimulatorSettings,
    rng: random.Random,
    stats: FeedbackStats,
) -> list[AnyEvent]:
    """The exposure shown before ``search``, and the simulated click on it (if any)."""
    shown = tuple(
        ShownQuery(query=query, source=source, position=i)
        for i, (query, source, _) in enumerate(served)
    )
    exposure = HintExposureEvent(
        user_id=search.user_id, ts=search.ts, request_id=f"sim-{number}", shown=shown
    )
    stats.exposures += 1
    clicked = decide(exposure, search.query, settings, rng.random())
    if clicked is None:
        return [exposure]
    stats.clicks += 1
    click = HintClickEvent(
        user_id=search.user_id,
        ts=search.ts,
        request_id=exposure.request_id,
        query=clicked.query,
        source=clicked.source,
        position=clicked.position,
    )
    return [exposure, click]


def history_key(query: str) -> str:
    """A query as the history table keys it (:mod:`cache.history`)."""
    return normalize(query, MAX_KEY_CHARS)
