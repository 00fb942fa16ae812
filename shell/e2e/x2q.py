"""The x2q index of a demo or benchmark run: built once, before the loop starts serving.

``aigq demo`` and ``aigq bench e2e`` replay a slice of a log; in production the daily
``aigq x2q build`` would have indexed the triggers of the days before. Here the index is made
of the slice's own most seen triggers (``max_triggers``), by the builder's own code in
memory (:func:`training.x2q_offline.build_offline`: the Think model in this process, the
MiniLM relevance, the slice's query popularity), once per run; each arm then publishes it
under its own key prefix (:meth:`cache.x2q.X2QStore.publish`, an atomic switch) with the
popular set, before any event is replayed. So a user whose fresh click or search has not been
regenerated yet already has queries waiting.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aigq.redis_clients import open_redis
from aigq.settings import RedisSettings


@dataclass(frozen=True)
class PrebuiltIndex:
    """What each arm publishes, and how building it went."""

    entries: tuple[tuple[str, str, tuple[str, ...]], ...]
    """``(kind, normalised text, queries)`` per covered trigger"""
    popular: tuple[tuple[str, float], ...]
    model: str
    triggers: int
    seconds: float

    @property
    def coverage(self) -> float:
        return len(self.entries) / self.triggers if self.triggers else 0.0

    def line(self) -> str:
        rate = self.triggers / self.seconds if self.seconds > 0 else 0.0
        return (
            f"x2q index: {len(self.entries):,} of {self.triggers:,} triggers covered "
            f"({self.coverage:.1%}) by {self.model} in {self.seconds:.0f} s ({rate:.1f}/s)"
        )


def prebuild(
    events: Sequence[Any], max_triggers: int, say: Callable[[str], None]
) -> PrebuiltIndex | None:
    """The slice's index (None when ``max_triggers`` is 0 or the slice has no trigger)."""
    if max_triggers <= 0 or not events:
        return None
    from aigq.registry import Registry
    from generators.x2q_triggers import collect
    from training.x2q_offline import build_offline

    ref = Registry().resolve("aigq-think")
    span = min(e.ts for e in events), max(e.ts for e in events) + 1
    triggers, popularity = collect(events, *span)
    triggers = triggers[:max_triggers]
    if not triggers:
        return None
    say(f"x2q: {len(triggers):,} triggers of the slice, generating with {ref.tag} ...")
    index = build_offline(triggers, popularity, str(ref.path), ref.tag)
    entries = tuple(
        (member.split(":", 1)[0], member.split(":", 1)[1], queries)
        for member, queries in index.entries.items()
    )
    return PrebuiltIndex(entries, tuple(popularity.top(100)), ref.tag, len(triggers), index.seconds)


def install(index: PrebuiltIndex, redis: RedisSettings, prefix: str) -> str:
    """Publish the index and the popular set under ``prefix``; the new index version."""
    from cache.popular import PopularQueries
    from cache.x2q import X2QStore

    async def run() -> str:
        client = open_redis(redis)
        try:
            version = await X2QStore(client, prefix).publish(list(index.entries))
            await PopularQueries(client, prefix).write(list(index.popular))
            return version
        finally:
            await client.aclose()

    return asyncio.run(run())
