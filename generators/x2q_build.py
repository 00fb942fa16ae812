"""``aigq x2q build``: the offline job that fills the x2q index (paper §4, "x2q real-time").

For every trigger seen in the window (:mod:`generators.x2q_triggers`), AIGQ-Think is shown
that one behaviour (:func:`generators.think.think_prompt`) and writes its rationale and
``(trigger set -> queries)`` pairs; the queries of the pairs that name the trigger
(:meth:`~generators.think.ThinkOutput.for_trigger`) are ranked by ``S(x, q)``
(:mod:`generators.x2q_rank`) and written under a NEW index version. When every trigger is
done, one atomic switch (:meth:`cache.x2q.X2QStore.switch`) makes the new version the one
readers see and gives the old one a short expiry: a reader sees the old index or the new one,
never a mix. The popular set (:class:`cache.popular.PopularQueries`) is replaced from the same
window.

**Resumable.** Triggers are processed in a fixed order in batches; after each batch is written,
a checkpoint (``<prefix>x2q:build``: the version being built, a fingerprint of the trigger
list and settings, and how many are done) is saved. A build started again with the same
fingerprint goes on from there, into the same version; a different one discards the
abandoned version first. An abandoned version that nobody discards expires with its TTL.

**Counted, never silent.** Each trigger ends as ``covered`` (queries written) or
``no_queries`` (the model's output gave none for it); every problem the Think parser found
is counted by its reason (:class:`BuildReport`).
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from cache.errors import CacheError
from cache.popular import PopularQueries
from cache.x2q import X2QStore
from generators.backends.base import Backend, interleave
from generators.embeddings import Embeddings
from generators.prompt import INDEX_TOKENS
from generators.think import parse_think, think_prompt
from generators.x2q_rank import rank
from generators.x2q_triggers import Popularity, SeenTrigger


@dataclass(frozen=True)
class BuildConfig:
    """What a build does with each trigger (recorded in the checkpoint's fingerprint)."""

    k: int = 10
    """queries asked for per trigger"""
    keep: int = 20
    """queries stored per trigger, best ``S`` first (the read path reads ``per_trigger``)"""
    alpha: float = 0.7
    """weight of relevance against effectiveness in ``S``"""
    batch_size: int = 32
    """triggers per model call (and per checkpoint)"""
    popular: int = 100
    """queries in the popular set (0: leave it alone)"""
    popular_ttl_s: int = 2 * 86_400
    retry_n: int = 4
    """answers sampled for a trigger the first (greedy) one gave nothing for (0: no retry)"""
    retry_temperature: float = 0.8
    model_version: str = ""
    """the Think model's name@version (a changed model is a new build)"""

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        for name in ("k", "keep", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.popular < 0 or self.popular_ttl_s < 1:
            raise ValueError("popular must be >= 0 and popular_ttl_s >= 1")


@dataclass
class BuildReport:
    """What one build did."""

    version: str = ""
    previous: str | None = None
    model: str = ""
    triggers: int = 0
    resumed_at: int = 0
    """triggers a resumed build found already done (0: a fresh build)"""
    covered: int = 0
    no_queries: int = 0
    retried: int = 0
    """triggers the first answer gave nothing for, asked again with sampling"""
    rescued: int = 0
    """of those, the ones the second try covered"""
    queries: int = 0
    problems: dict[str, int] = field(default_factory=dict)
    """Think-output problems by reason, over every sample parsed"""
    by_kind: dict[str, int] = field(default_factory=dict)
    """covered triggers per kind (query, item, category)"""
    popular: int = 0
    seconds: float = 0.0
    model_seconds: float = 0.0
    """of ``seconds``, in the model's calls (the rest: scoring, Redis, the checkpoints)"""

    @property
    def coverage(self) -> float:
        done = self.covered + self.no_queries
        return self.covered / done if done else 0.0

    @property
    def triggers_per_s(self) -> float:
        done = self.triggers - self.resumed_at
        return done / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            **asdict(self),
            "coverage": self.coverage,
            "triggers_per_s": self.triggers_per_s,
        }


Progress = Callable[[int, int, BuildReport], None]


def trigger_text(trigger: SeenTrigger) -> str:
    """The trigger's normalised text, the part of its key after the kind."""
    return trigger.member.split(":", 1)[1]


def trigger_prompt(trigger: SeenTrigger, k: int) -> str:
    """The Think prompt of one trigger: its behaviour as the whole sequence, ``<1>``, today."""
    return think_prompt((), (trigger.behaviour,), trigger.behaviour[0], k)


def ranked_queries(
    trigger: SeenTrigger,
    samples: Sequence[str],
    config: BuildConfig,
    popularity: Popularity,
    embeddings: Embeddings,
    problems: Counter[str],
) -> list[str]:
    """The trigger's queries from the model's ``samples``: parsed, merged in rank order, scored
    by ``S`` (relevance to the behaviour's text) and cut to ``keep``."""
    lists = []
    for sample in samples:
        # Parsed as if the prompt had every index: a Think model learnt on whole sessions
        # often names behaviour 1 together with neighbours (``<1><2>``) that this one-behaviour
        # prompt does not have. Such a pair is still about behaviour 1, so it is kept for it;
        # a pair that does not name 1 is about nothing shown and is not used.
        output = parse_think(sample, len(INDEX_TOKENS), k=config.k)
        # a one-behaviour answer has no rationale by design (training.think.singles)
        problems.update(p for p in output.problems if p != "no_rationale")
        lists.append(list(output.for_trigger(1)))
    candidates = interleave(lists)
    if not candidates:
        return []
    relevance = embeddings.cosine(trigger.behaviour[2], candidates)
    effectiveness = [popularity.effectiveness(q) for q in candidates]
    return [s.query for s in rank(candidates, relevance, effectiveness, config.alpha)][
        : config.keep
    ]


class Step(NamedTuple):
    """One batch of triggers: their ranked queries (``[]``: none), the seconds in the model's
    calls, how many were asked again (``retried``) and got queries then (``rescued``)."""

    lists: list[list[str]]
    model_seconds: float
    retried: int = 0
    rescued: int = 0


async def trigger_lists(
    triggers: Sequence[SeenTrigger],
    backend: Backend,
    config: BuildConfig,
    popularity: Popularity,
    embeddings: Embeddings,
    problems: Counter[str],
    retry: Backend | None = None,
) -> Step:
    """Each trigger's ranked queries, from one model call over their prompts (the build's
    step, and what the offline evaluation's in-memory index is made of); the triggers it gave
    nothing for are asked once more of ``retry`` (the same model, sampling several answers:
    :attr:`BuildConfig.retry_n`), when given."""
    if not triggers:
        return Step([], 0.0)
    prompts = [trigger_prompt(t, config.k) for t in triggers]
    called = time.perf_counter()
    samples = await backend.complete(prompts)
    model_s = time.perf_counter() - called
    lists = [
        ranked_queries(trigger, texts, config, popularity, embeddings, problems)
        for trigger, texts in zip(triggers, samples, strict=True)
    ]
    empty = [i for i, queries in enumerate(lists) if not queries]
    if retry is None or not empty:
        return Step(lists, model_s)
    called = time.perf_counter()
    again = await retry.complete([prompts[i] for i in empty])
    model_s += time.perf_counter() - called
    for i, texts in zip(empty, again, strict=True):
        lists[i] = ranked_queries(triggers[i], texts, config, popularity, embeddings, problems)
    return Step(lists, model_s, len(empty), sum(bool(lists[i]) for i in empty))


def fingerprint(triggers: Sequence[SeenTrigger], config: BuildConfig) -> str:
    """What makes two builds the same build: the triggers in order and the settings."""
    digest = hashlib.sha256(orjson.dumps(asdict(config)))
    for trigger in triggers:
        digest.update(trigger.member.encode())
        digest.update(b"\x00")
    return digest.hexdigest()[:32]


class Checkpoint:
    """The resumable state of the build in progress, one JSON string at ``<prefix>x2q:build``."""

    def __init__(self, redis: Redis, prefix: str = "aigq:", ttl_s: int = 2 * 86_400) -> None:
        self._redis = redis
        self.key = f"{prefix}x2q:build"
        self._ttl_s = ttl_s

    async def load(self) -> dict[str, object] | None:
        try:
            raw = await self._redis.get(self.key)
        except (RedisError, OSError) as exc:
            raise CacheError(f"x2q checkpoint read failed: {exc}") from exc
        if raw is None:
            return None
        try:
            state = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None  # unreadable: start over (the abandoned version expires on its own)
        return state if isinstance(state, dict) else None

    async def save(self, version: str, print_: str, done: int) -> None:
        state = {"version": version, "fingerprint": print_, "done": done}
        try:
            await self._redis.set(self.key, orjson.dumps(state), ex=self._ttl_s)
        except (RedisError, OSError) as exc:
            raise CacheError(f"x2q checkpoint write failed: {exc}") from exc

    async def clear(self) -> None:
        try:
            await self._redis.delete(self.key)
        except (RedisError, OSError) as exc:
            raise CacheError(f"x2q checkpoint delete failed: {exc}") from exc


async def _start(store: X2QStore, checkpoint: Checkpoint, print_: str) -> tuple[str, int]:
    """The version to write into and the triggers already done: resume a build of the same
    fingerprint, else discard an abandoned one and begin afresh."""
    state = await checkpoint.load()
    current = await store.current()
    if state is not None:
        version, done = state.get("version"), state.get("done")
        if (
            state.get("fingerprint") == print_
            and isinstance(version, str)
            and isinstance(done, int)
            and (current is None or version > current)  # zero-padded: text order is age
        ):
            return version, done
        if isinstance(version, str) and version != current:
            with contextlib.suppress(ValueError):  # not a version we wrote: nothing to discard
                await store.discard(version)
    version = await store.begin()
    await checkpoint.save(version, print_, 0)
    return version, 0


async def build_index(
    triggers: Sequence[SeenTrigger],
    popularity: Popularity,
    backend: Backend,
    store: X2QStore,
    checkpoint: Checkpoint,
    config: BuildConfig,
    embeddings: Embeddings | None = None,
    popular: PopularQueries | None = None,
    progress: Progress | None = None,
    retry: Backend | None = None,
) -> BuildReport:
    """Generate, score and write every trigger's queries, then switch the index (module
    docstring); ``retry`` asks again for the triggers a batch gave nothing for
    (:func:`trigger_lists`). Raises the backend's and the cache's errors; the checkpoint
    survives them."""
    embeddings = embeddings or Embeddings()
    started = time.perf_counter()
    print_ = fingerprint(triggers, config)
    version, done = await _start(store, checkpoint, print_)
    report = BuildReport(
        version=version, model=config.model_version, triggers=len(triggers), resumed_at=done
    )
    problems: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    if progress is not None:
        progress(done, len(triggers), report)
    for start in range(done, len(triggers), config.batch_size):
        chunk = triggers[start : start + config.batch_size]
        step = await trigger_lists(chunk, backend, config, popularity, embeddings, problems, retry)
        report.model_seconds += step.model_seconds
        report.retried += step.retried
        report.rescued += step.rescued
        entries: list[tuple[str, str, Sequence[str]]] = []
        for trigger, queries in zip(chunk, step.lists, strict=True):
            if queries:
                report.covered += 1
                report.queries += len(queries)
                kinds[trigger.kind] += 1
                entries.append((trigger.kind, trigger_text(trigger), queries))
            else:
                report.no_queries += 1
        await store.write_many(entries, version)
        await checkpoint.save(version, print_, start + len(chunk))
        report.problems, report.by_kind = dict(problems), dict(kinds)
        report.seconds = time.perf_counter() - started
        if progress is not None:
            progress(start + len(chunk), len(triggers), report)
    report.previous = await store.switch(version)
    await checkpoint.clear()
    if popular is not None and config.popular:
        report.popular = await popular.write(
            popularity.top(config.popular), ttl_s=config.popular_ttl_s
        )
    report.problems, report.by_kind = dict(problems), dict(kinds)
    report.seconds = time.perf_counter() - started
    return report
