"""The x2q index offline, for ``aigq eval --protocol last-day --x2q MODEL``.

What ``aigq x2q build`` would have written for the held-out users, held in memory: a daily
build sees the triggers of the days before the day it serves, so for each held-out user the
triggers come from their own events in the ``days`` before their test day (never from the
test day itself), and the index is made of those triggers' queries by the builder's own code
(:func:`generators.x2q_build.trigger_lists`: the Think prompt of one behaviour, the parser,
the ``S`` ranking). Effectiveness is the training users' query popularity: nothing of the
held-out users' labels goes in.

Coverage is measured where the read path looks: the first ``AIGQ_HINTS_TRIGGERS`` triggers of
each held-out user's recent set at the start of the day (:class:`training.lastday.DaySample`).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from generators.embeddings import Embeddings
from generators.x2q_build import trigger_lists
from generators.x2q_settings import X2QSettings
from generators.x2q_triggers import DAY_MS, Popularity, SeenTrigger, collect
from training.lastday import DaySample
from training.samples import AnyEvent


@dataclass
class OfflineIndex:
    """The in-memory index (trigger member -> queries) and what building it took."""

    entries: dict[str, tuple[str, ...]]
    triggers: int
    seconds: float
    problems: dict[str, int] = field(default_factory=dict)
    rescued: int = 0
    """triggers covered only by the second, sampled try"""

    @property
    def triggers_per_s(self) -> float:
        return self.triggers / self.seconds if self.seconds > 0 else 0.0


def heldout_triggers(
    test: Sequence[DaySample], held: Sequence[AnyEvent], days: int
) -> list[SeenTrigger]:
    """The distinct triggers of the held-out users' events in the ``days`` before each one's
    test day."""
    day = {sample.user_id: sample.day_ms for sample in test}
    window = [
        e
        for e in held
        if e.user_id in day and day[e.user_id] - days * DAY_MS <= e.ts < day[e.user_id]
    ]
    if not window:
        return []
    return collect(window, min(e.ts for e in window), max(e.ts for e in window) + 1)[0]


def build_offline(
    triggers: Sequence[SeenTrigger],
    pop: Popularity,
    model: str,
    version: str,
    settings: X2QSettings | None = None,
    log: Any = lambda _: None,
) -> OfflineIndex:
    """Every trigger's queries by the Think model at ``model`` (a folder), in memory."""
    settings = settings or X2QSettings(backend="transformers")
    config = settings.build_config(version)
    embeddings = Embeddings()
    problems: Counter[str] = Counter()
    entries: dict[str, tuple[str, ...]] = {}
    rescued = [0]

    async def run() -> None:
        async with settings.open_backends(model, version) as (backend, retry):
            for start in range(0, len(triggers), config.batch_size):
                chunk = triggers[start : start + config.batch_size]
                step = await trigger_lists(chunk, backend, config, pop, embeddings, problems, retry)
                rescued[0] += step.rescued
                for trigger, queries in zip(chunk, step.lists, strict=True):
                    if queries:
                        entries[trigger.member] = tuple(queries)
                if (start // config.batch_size) % 10 == 0:
                    log(f"x2q offline: {start + len(chunk):,} of {len(triggers):,} triggers")

    started = time.perf_counter()
    asyncio.run(run())
    seconds = time.perf_counter() - started
    return OfflineIndex(entries, len(triggers), seconds, dict(problems), rescued[0])


def coverage(
    test: Sequence[DaySample], entries: dict[str, tuple[str, ...]], looked_up: int
) -> dict[str, float]:
    """Share of the looked-up triggers (the first ``looked_up`` of each recent set) and of all
    recorded triggers the index has, and of users with at least one looked-up hit."""
    read = [t.member for s in test for t in s.triggers[:looked_up]]
    every = [t.member for s in test for t in s.triggers]
    users = [s for s in test if s.triggers[:looked_up]]
    hit_users = sum(any(t.member in entries for t in s.triggers[:looked_up]) for s in users)
    return {
        "looked_up_triggers": len(read),
        "looked_up_covered": sum(m in entries for m in read) / len(read) if read else 0.0,
        "recorded_triggers": len(every),
        "recorded_covered": sum(m in entries for m in every) / len(every) if every else 0.0,
        "users_with_triggers": len(users),
        "users_with_x2q": hit_users / len(users) if users else 0.0,
    }
