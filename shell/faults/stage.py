"""What a fault scenario runs in: a loop of its own (broker, worker, generator, API), traffic,
and the checks every scenario makes when it ends (see :mod:`shell.faults.figures`)."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from aigq.dev.probe import wait_until
from shell.e2e.stack import Loop, LoopConfig, ModelServer, http_status
from shell.faults.figures import Count, Figures, compare
from shell.faults.procs import Tracked
from shell.faults.state import (
    changelog_name,
    dead_letter_origins,
    generator_answered,
    metric,
    read_topic,
    scrape,
    wait_counted,
    wait_progress,
    worker_applied,
)
from shell.faults.traffic import Prober, Record, Sender, Sent


@dataclass(frozen=True)
class Options:
    short: bool = False
    """the CI form: fewer events, shorter outages"""
    kills: int = 5
    """kill -9 rounds of the session worker"""
    header_timeout_s: float = 15.0
    """how long a connection that never finishes its headers may stay open at the read API"""
    stop_timeout_s: float = 15.0
    """how long a process may take to stop after SIGTERM"""
    count_timeout_s: float = 90.0
    """how long to wait for every event to be counted"""


@dataclass
class Stage:
    """A scenario's setting: its own loop configuration (prefix, state folder), the shared
    model server, the options, where to say what happens, and the row it fills."""

    name: str
    config: LoopConfig
    model: ModelServer
    options: Options
    say: Callable[[str], None]
    figures: Figures

    def size(self, short: int, full: int) -> int:
        return short if self.options.short else full

    @contextlib.contextmanager
    def loop(
        self, config: LoopConfig | None = None, model: ModelServer | None = None
    ) -> Iterator[Run]:
        """Start a loop; when the block ends, find what crashed and stop everything."""
        with Loop(config or self.config, model or self.model) as loop:
            self.say(f"{self.name}: loop ready")
            run = Run(self, loop, Tracked.of(loop.procs, {**os.environ, **loop.env()}))
            try:
                yield run
            finally:
                run.finish()


@dataclass
class Run:
    """A running loop of one scenario."""

    stage: Stage
    loop: Loop
    procs: Tracked
    probers: list[Prober] = field(default_factory=list)

    @property
    def figures(self) -> Figures:
        return self.stage.figures

    @property
    def changelog(self) -> str:
        return changelog_name(self.loop.env()["AIGQ_STREAM_APP_ID"])

    def send(self, batch: Sequence[Record], rate: float) -> Sender:
        return Sender(self.loop.kafka, batch, rate).start()

    def probe(self, users: Sequence[str], rate: float = 10.0) -> Prober:
        prober = Prober(self.loop.api_url, users, rate).start()
        self.probers.append(prober)
        return prober

    def ready(self, name: str, timeout_s: float = 25.0) -> bool:
        """Whether ``aigq <name>`` answers its readiness page within ``timeout_s``."""
        url = {
            "worker": self.loop.worker_metrics_url.replace("/metrics", "/ready"),
            "serve": f"{self.loop.api_url}/readyz",
            "generate": self.loop.generator_metrics_url,
        }[name]
        return wait_until(lambda: http_status(url) == 200, timeout_s, every_s=0.2)

    def count(self, batch: Sequence[Record], sent: Sent, metrics: bool = True) -> Count:
        """Wait until the state counts every valid event sent (or the time is up), then fold
        what it counts and what was dead-lettered into the figures."""
        want = sent.want(batch)
        got, monotonic = wait_counted(
            self.loop.kafka, self.changelog, want, self.stage.options.count_timeout_s
        )
        count = compare(want, got)
        self.figures.add(count)
        if count.lost:
            self._why_short()
            short = {u: (n, got.get(u, 0)) for u, n in want.items() if got.get(u, 0) < n}
            worst = sorted(short.items(), key=lambda kv: kv[1][1] - kv[1][0])[:5]
            self.figures.note(
                f"{len(short)} users short; the most (user: sent, counted): "
                + ", ".join(f"{user}: {n}, {c}" for user, (n, c) in worst)
            )
        self.figures.check(monotonic, "a session's version went down in the changelog")
        invalid = sent.invalid(batch)
        self.figures.events_sent += len(invalid)
        if invalid:
            self._dead_letters(invalid)
        if metrics:
            self._metrics_applied(count.sent)
        if sent.errors:
            self.figures.note(f"{len(sent.errors)} sends not acknowledged: {sent.errors[0]}")
        return count

    def _why_short(self) -> None:
        """What the worker's /metrics say when events are missing: its gap guard, its lag."""
        page = scrape(self.loop.worker_metrics_url)
        if page is None:
            self.figures.note("events missing; the worker's /metrics do not answer")
            return
        gaps = {w: metric(page, "aigq_stream_source_gaps", what=w)
                for w in ("seeks", "dropped", "accepted")}  # fmt: skip
        lag = metric(page, "aigq_stream_consumer_lag")
        guard = ", ".join(f"{k} {v:.0f}" for k, v in gaps.items())
        self.figures.note(f"events missing; the worker's gap guard: {guard}; its lag {lag:.0f}")

    def _dead_letters(self, invalid: list[str]) -> None:
        topic = self.loop.topics.name("dead_letter")
        letters = dead_letter_origins(self.loop.kafka, topic)
        if not all(o in letters for o in invalid):  # the last flush may still be on its way
            wait_until(
                lambda: all(o in dead_letter_origins(self.loop.kafka, topic) for o in invalid),
                15,
                every_s=1.0,
            )
            letters = dead_letter_origins(self.loop.kafka, topic)
        found = [o for o in invalid if o in letters]
        self.figures.dead_lettered += len(found)
        self.figures.lost += len(invalid) - len(found)
        twice = [o for o in found if letters[o] > 1]
        if twice:
            self.figures.note(f"{len(twice)} records dead-lettered more than once")

    def _metrics_applied(self, want: int) -> None:
        def applied() -> int | None:
            page = scrape(self.loop.worker_metrics_url)
            return None if page is None else worker_applied(page)

        wait_until(lambda: applied() == want, 5, every_s=0.5)
        self.figures.applied_metrics = applied()

    def answered(self, timeout_s: float, baseline: int = 0) -> tuple[int, int | None]:
        """Wait until the generator answered every request in ``<prefix>.regenerate`` (its
        counters less ``baseline``), or the time is up, or it stalls; the requests and the
        answers then (None: the generator's /metrics does not answer)."""
        topic = self.loop.topics.name("regenerate")

        def read() -> tuple[int, int | None]:
            page = scrape(self.loop.generator_metrics_url)
            got = None if page is None else generator_answered(page) - baseline
            return len(read_topic(self.loop.kafka, topic)), got

        return wait_progress(
            read,
            lambda r: r[1] is None or r[1] >= r[0],
            lambda r: r[1] or 0,
            timeout_s,
        )

    def check_answered(self, timeout_s: float, baseline: int = 0, when: str = "") -> None:
        requests, answered = self.answered(timeout_s, baseline)
        if answered is None:
            self.figures.failures.append(f"the generator's /metrics did not answer{when}")
        else:
            self.figures.check(
                answered >= requests,
                f"the generator answered {answered:,} of {requests:,} requests{when}",
            )

    def finish(self) -> None:
        """Read the probes, find processes that died unasked, stop the rest with SIGTERM."""
        for prober in self.probers:
            answers = prober.stop()
            self.figures.requests_sent += len(answers)
            self.figures.requests_failed += sum(a.status != 200 for a in answers)
        f = self.figures
        died = self.procs.died()
        for name, code in died.items():
            f.crashed.append(f"{name} (exit {code})")
            f.note(f"aigq {name} died unasked; its log: {self.procs.log_excerpt(name)!r}")
        for name in sorted(self.procs.expected - set(died)):
            if not self.ready(name, timeout_s=3):
                f.crashed.append(f"{name} (running, not ready)")
                f.note(f"aigq {name} runs but is not ready; its log: "
                       f"{self.procs.log_excerpt(name)!r}")  # fmt: skip
        if not f.passed:
            f.note(f"the processes' logs are in {self.loop.config.state_dir}")
        codes, stuck = self.procs.stop_all(self.stage.options.stop_timeout_s)
        f.unstoppable += stuck
        for name, code in codes.items():
            # uvicorn raises the signal again once it has shut down: -SIGTERM is its clean stop
            if code not in (0, -signal.SIGTERM):
                f.crashed.append(f"{name} (exit {code} on SIGTERM)")
