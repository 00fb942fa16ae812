"""The served list offline: what ``GET /v1/hints/{user}`` would return, by the API's own code.

:func:`served_list` makes the call :meth:`cache.hints.HintClient.hints` makes, on values the
evaluation holds instead of what Redis would hold: :func:`cache.compose.compose` (the read
path's one composition rule) over

- the u2q run: the model's validated list built into a run by the generator's own
  :func:`generators.requests.run_for` (event time: the context's last event), unless it has
  expired (the generator's ``ttl_s``) by the time the hints are read;
- the x2q lists of the user's newest ``triggers`` recent triggers (``AIGQ_HINTS_TRIGGERS``),
  each cut to ``per_trigger`` queries, for the triggers the x2q index has an entry for;
- the user's search history: the worker's fold of the context (:mod:`cache.history`), its
  first ``AIGQ_HINTS_HISTORY`` queries, as the read script reads them from the stored top;
- the popular queries (:func:`popular_queries`), then the static fallback.

Adding a source to the composition is one more argument here, passed through to ``compose``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from aigq.events import SearchEvent
from aigq.safety import is_blocked
from cache.compose import Hint, TriggerHits, compose
from cache.recent import Trigger
from cache.settings import HintSettings
from cache.u2q import U2QRun
from generators.requests import run_for
from training.samples import AnyEvent, Context, query_key

U2Q_TTL_MS = 7 * 86_400_000
"""a user's u2q runs expire this long after the last write (``AIGQ_GENERATE_TTL_S``' default)"""


def popular_queries(events: Iterable[AnyEvent], n: int) -> list[str]:
    """The ``n`` most searched queries among ``events`` (give it the training users' only),
    each as first typed; ties to the first seen; never a blocked one (:mod:`aigq.safety`)."""
    count: Counter[str] = Counter()
    text: dict[str, str] = {}
    for event in events:
        if isinstance(event, SearchEvent):
            key = query_key(event.query)
            if key and not is_blocked(key):
                text.setdefault(key, event.query)
                count[key] += 1
    order = {key: i for i, key in enumerate(text)}
    ranked = sorted(text, key=lambda key: (-count[key], order[key]))
    return [text[key] for key in ranked[:n]]


def model_run(context: Context, queries: Sequence[str], model_version: str) -> U2QRun:
    """The u2q run the generator writes for this context's request and the model's list."""
    return run_for(context.request(), queries, model_version, now_ms=context.now_ms)


def served_list(
    u2q: U2QRun | None,
    triggers: Sequence[Trigger],
    x2q: Mapping[str, Sequence[str]],
    popular: Sequence[str],
    settings: HintSettings,
    k: int | None = None,
    history: Sequence[str] = (),
) -> list[Hint]:
    """The hints :meth:`cache.hints.HintClient.hints` returns for a user whose stored values
    are these: ``u2q`` (None when absent), ``triggers`` (the recent set, newest first),
    ``x2q`` (trigger member -> its queries; empty when there is no x2q index) and ``popular``
    (the popular set, most popular first); ``history`` (the user's stored history, strongest
    first)."""
    wanted = min(settings.default_k if k is None else k, settings.max_k)
    read = triggers[: settings.triggers]
    hits = [
        TriggerHits(trigger, tuple(x2q[trigger.member])[: settings.per_trigger])
        for trigger in read
        if trigger.member in x2q
    ]
    shown = tuple(history)[: settings.history]
    hints = compose(u2q, hits, popular[:wanted], wanted, shown)
    if not hints and settings.popular_fallback:
        hints = compose(None, (), settings.popular_fallback, wanted)
    return hints


def served_at(run: U2QRun | None, read_ms: int, ttl_ms: int = U2Q_TTL_MS) -> U2QRun | None:
    """The run if its key still exists at ``read_ms`` (written at its event time), else None."""
    if run is None or read_ms - run.event_ts >= ttl_ms:
        return None
    return run
