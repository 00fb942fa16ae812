"""``aigq demo`` and ``aigq bench e2e``: the whole loop, started, driven and measured."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from aigq.cli_kit import goal_line
from aigq.safety import is_blocked
from aigq.settings import RedisSettings, load
from aigq.stats import percentile
from shell.e2e.report import HitRate, lag_summary
from shell.e2e.stack import ARMS, Loop, LoopConfig, ModelServer, arm_config

if TYPE_CHECKING:
    from shell.e2e.run import ArmResult

# shell.e2e.run (the driver: aiohttp, aiokafka) is imported in the commands that run a loop,
# so that the root command imports only the base packages (tests/test_roles.py).

console = Console()

DataDir = Annotated[Path, typer.Option(help="holds aol/ (the synthetic shop when absent)")]
Events = Annotated[int, typer.Option(min=1_000, help="events replayed (the log's first N)")]
Rate = Annotated[float, typer.Option(min=1, help="fixed replay rate, events/s")]
X2QTriggers = Annotated[
    int,
    typer.Option(min=0, help="x2q index built first: the slice's N most seen triggers (0: none)"),
]
Backend = Annotated[
    str, typer.Option(help="auto (vLLM, else transformers), vllm-http, transformers")
]


def terminate_as_interrupt() -> None:
    """SIGTERM unwinds like Ctrl-C, so everything started is stopped either way."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def _model(data_dir: Path, backend: str, state: Path, train_steps: int) -> ModelServer:
    if backend not in ("auto", "vllm-http", "transformers"):
        raise typer.BadParameter(f"--backend must be auto, vllm-http or transformers: {backend}")
    from shell.e2e.run import embedded_model

    path, tag, trained_s = embedded_model(data_dir, 200, train_steps, console.print)
    console.print(f"model: {tag}" + (f" (trained now in {trained_s:.0f} s)" if trained_s else ""))
    server = ModelServer(path, tag, state, backend)  # type: ignore[arg-type]
    console.print("starting the generation backend ...")
    server.start()
    if server.url:
        console.print(f"vLLM (CPU) serving {tag} at {server.url}, up in {server.startup_s:.0f} s")
    else:
        why = f": {server.fallback_reason}" if server.fallback_reason else ""
        console.print(f"[yellow]generating with transformers[/] (vLLM not used{why})")
    return server


def _ms(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{percentile(values, 0.5):,.0f} / {percentile(values, 0.99):,.0f}"


def _arm_table(arms: list[ArmResult], title: str) -> Table:
    table = Table(title=title)
    table.add_column("figure")
    for arm in arms:
        table.add_column(arm.name, justify="right")

    k = arms[0].config.k
    rows: list[tuple[str, Callable[[ArmResult], str]]] = [
        ("events sent (achieved rate)",
         lambda a: f"{a.events:,} ({a.events / a.drive.elapsed_s:,.0f}/s)"),
        ("events applied by the session worker", lambda a: f"{a.drive.applied:,}"),
        ("regenerations (requests)", lambda a: f"{len(a.requests):,}"),
        ("regenerations ÷ events", lambda a: f"{a.regenerations_per_event:.3f}"),
        ("lists written to the u2q cache", lambda a: f"{sum(r.written for r in a.results):,}"),
        ("freshness p50 / p99 ms", lambda a: _ms(a.stages.freshness)),
        ("  excluding model time p50 / p99", lambda a: _ms(a.stages.pipeline)),
        ("  model call (batch) p50 / p99", lambda a: _ms(a.stages.model)),
        ("  waiting for the model (budget, queues) p50 / p99",
         lambda a: _ms(a.stages.model_wait)),
        ("  ingest -> trigger (session worker) p50 / p99", lambda a: _ms(a.stages.session)),
        ("  request -> generator p50 / p99", lambda a: _ms(a.stages.transit)),
        ("  generator -> cache p50 / p99", lambda a: _ms(a.stages.generator)),
        ("max lag: session / generator",
         lambda a: "{:,} / {:,}".format(*lag_summary(a.drive.lag))),
        ("worker: deferred / fired later / expired",
         lambda a: "{:,.0f} / {:,.0f} / {:,.0f}".format(
             *(a.drive.counts.get(f"decision:{k}", 0)
               for k in ("deferred", "fired_deferred", "expired")))),
        ("generator: superseded (newer pending / cached)",
         lambda a: "{:,.0f} / {:,.0f}".format(
             *(a.drive.counts.get(f"superseded:{k}", 0) for k in ("newer_pending", "cached")))),
        ("drained after replay",
         lambda a: f"{'yes' if a.drive.drained else 'NO'} in {a.drive.drain_s:.1f} s"),
        (f"served-list HR@{k} (hits / searches)",
         lambda a: f"{a.hit_rate.rate:.4f} ({a.hit_rate.hits:,}/{a.hit_rate.searches:,})"),
        ("hits by source",
         lambda a: ", ".join(f"{s} {n:,}" for s, n in a.hit_rate.by_source.most_common())),
        ("searches served a non-empty list",
         lambda a: f"{a.hit_rate.served / max(a.hit_rate.searches, 1):.3f}"),
        (f"generated list alone: HR@{k} (hits / searches with one)",
         lambda a: _list_hits(a.list_hit_rate)),
    ]  # fmt: skip
    for label, cell in rows:
        table.add_row(label, *(cell(a) for a in arms))
    return table


def _list_hits(hr: HitRate) -> str:
    return f"{hr.hits / max(hr.served, 1):.4f} ({hr.hits:,}/{hr.served:,})"


def _reasons(arm: ArmResult) -> str:
    return ", ".join(f"{reason} {n:,}" for reason, n in arm.reasons.most_common())


def _lag_table(arms: list[ArmResult], every_s: int = 5) -> Table:
    table = Table(title=f"consumer lag over time (every {every_s} s; events / requests)")
    table.add_column("t s", justify="right")
    for arm in arms:
        table.add_column(f"{arm.name}: sent", justify="right")
        table.add_column("session lag", justify="right")
        table.add_column("generator lag", justify="right")
    length = max(len(a.drive.lag) for a in arms)
    for i in range(0, length, every_s):
        cells = [str(i + 1)]
        for arm in arms:
            if i < len(arm.drive.lag):
                s = arm.drive.lag[i]
                cells += [f"{s.produced:,}", f"{s.session_lag:,}", f"{s.generator_lag:,}"]
            else:
                cells += ["", "", ""]
        table.add_row(*cells)
    return table


def _base_config(state: Path, prefix: str, flush_s: float, batch: int, tokens: int) -> LoopConfig:
    return LoopConfig(
        state_dir=state, prefix=prefix, redis=load(RedisSettings), flush_interval_s=flush_s,
        batch_size=batch, max_tokens=tokens,
    )  # fmt: skip


def demo_command(
    data_dir: DataDir = Path("../shared/data"),
    events: Events = 40_000,
    rate: Rate = 2_000.0,
    backend: Backend = "auto",
    users_shown: Annotated[int, typer.Option(min=1, help="users whose hints are shown")] = 5,
    train_steps: Annotated[int, typer.Option(min=10, help="IL-SFT steps if none cached")] = 300,
    state_dir: Annotated[Path, typer.Option(help="logs and PID files")] = Path(".aigq/demo"),
    learn: Annotated[
        bool,
        typer.Option(
            help="the learning loop too: exposures, simulated clicks, one trainer cycle, a "
            "hot reload, served CTR per model version (transformers backend)"
        ),
    ] = False,
    x2q_triggers: X2QTriggers = 1_000,
) -> None:
    """The whole nearline loop on this machine: model, broker, Redis, session worker,
    generator and read API; a slice of the AOL log replayed through it; what came out."""
    from shell.e2e.run import load_slice, run_arm
    from shell.e2e.x2q import prebuild

    terminate_as_interrupt()
    wall = time.monotonic()
    data = load_slice(data_dir, events)
    console.print(f"{len(data.events):,} events from {data.source}, replayed at {rate:,.0f}/s")
    if learn:  # a whole model swaps in only in-process (a vLLM server loads LoRA adapters)
        backend = "transformers"
    index = prebuild(data.events, x2q_triggers, console.print)
    if index is not None:
        console.print(index.line(), highlight=False)
    model = _model(data_dir, backend, state_dir, train_steps)
    if learn:
        from shell.e2e.cli_learn import demo_learn

        try:
            config = _base_config(state_dir, f"demo{os.getpid()}", 0.1, 64, 48)
            demo_learn(config, model, data, rate, console)
        finally:
            model.stop()
        console.print(f"demo wall time: {time.monotonic() - wall:.0f} s", highlight=False)
        return
    shown: list[tuple[str, list[dict[str, object]], list[str]]] = []

    def look(loop: Loop) -> None:
        # Users with next searches to print, none of them one a hint may never be (aigq.safety).
        users = [u for u in dict.fromkeys(e.user_id for e in reversed(data.events))
                 if data.next_searches.get(u)
                 and not any(is_blocked(q) for q in data.next_searches[u][:3])]  # fmt: skip
        for user in users:
            url = f"{loop.api_url}/v1/hints/{user}?k=10"
            with urllib.request.urlopen(url, timeout=5) as reply:
                body = json.loads(reply.read())
            # users whose ten hints hold generated (u2q) ones beside their history
            if any(hint["source"] == "u2q" for hint in body["hints"]):
                shown.append((user, body["hints"], data.next_searches[user][:3]))
            if len(shown) >= users_shown:
                break

    try:
        config = _base_config(state_dir, f"demo{os.getpid()}", 0.1, 64, 48)
        arm = run_arm("demo", config, model, data, rate, say=console.print, inspect=look, x2q=index)
    finally:
        model.stop()
    console.print(_arm_table([arm], "aigq demo: the nearline loop, end to end"))
    console.print(f"regeneration reasons: {_reasons(arm)}", highlight=False)
    for user, hints, upcoming in shown:
        table = Table(title=f"user {user}: hints served now, and their real next searches")
        table.add_column("#", justify="right")
        table.add_column("hint query (source)")
        table.add_column("real next search")
        wanted = {q.lower() for q in upcoming}
        for i in range(max(len(hints[:10]), len(upcoming))):
            hint = hints[i] if i < len(hints[:10]) else None
            text = f"{hint['query']} ({hint['source']})" if hint else ""
            if hint and str(hint["query"]).lower() in wanted:
                text = f"[bold green]{text}[/]"
            table.add_row(str(i + 1), text, upcoming[i] if i < len(upcoming) else "")
        console.print(table)
    console.print(f"demo wall time: {time.monotonic() - wall:.0f} s; everything it started is "
                  f"stopped (logs in {state_dir})", highlight=False)  # fmt: skip


def bench_e2e_command(
    data_dir: DataDir = Path("../shared/data"),
    seconds: Annotated[
        list[float], typer.Option(help="replay lengths, s (each arm runs each; repeatable)")
    ] = [20.0],  # noqa: B006 (typer reads the default; never mutated)
    rate: Rate = 2_000.0,
    arm: Annotated[
        list[str], typer.Option(help=f"arms, side by side (repeatable): {', '.join(ARMS)}")
    ] = ["shared", "fifo"],  # noqa: B006
    backend: Backend = "auto",
    flush_interval_s: Annotated[float, typer.Option(help="session flushes")] = 0.1,
    batch_size: Annotated[int, typer.Option(min=1, help="generator micro-batch")] = 64,
    max_tokens: Annotated[int, typer.Option(min=8, help="tokens per list")] = 48,
    warmup_s: Annotated[float, typer.Option(min=0, help="not counted in freshness")] = 5.0,
    drain_timeout_s: Annotated[float, typer.Option(min=0, help="wait for the backlog")] = 120.0,
    train_steps: Annotated[int, typer.Option(min=10, help="IL-SFT steps if none cached")] = 300,
    state_dir: Annotated[Path, typer.Option(help="logs and PID files")] = Path(".aigq/bench-e2e"),
    feedback: Annotated[
        bool, typer.Option(help="log exposures, simulate clicks, print served CTR per arm")
    ] = False,
    x2q_triggers: X2QTriggers = 1_000,
) -> None:
    """Replay the AOL log at a fixed rate through every real part, for each arm (``shared``:
    one budget that follows the generators and priority in the generator; ``fifo``: the loop
    before it; ``every_event``) and each replay length: freshness by stage, lag over time,
    what was deferred and superseded, and the hit rate of the list served at each search."""
    from shell.e2e.run import Slice, load_slice, run_arm
    from shell.e2e.x2q import prebuild

    terminate_as_interrupt()
    unknown = [a for a in arm if a not in ARMS]
    if unknown:
        raise typer.BadParameter(f"unknown arm(s) {unknown}; choose from {list(ARMS)}")
    data = load_slice(data_dir, int(max(seconds) * rate))
    console.print(f"{len(data.events):,} events from {data.source} at {rate:,.0f}/s")
    index = prebuild(data.events, x2q_triggers, console.print)
    if index is not None:
        console.print(index.line(), highlight=False)
    model = _model(data_dir, backend, state_dir, train_steps)
    base = _base_config(state_dir, f"e2e{os.getpid()}", flush_interval_s, batch_size, max_tokens)
    base = replace(base, feedback=feedback)
    runs: list[tuple[float, list[ArmResult]]] = []
    try:
        for length in seconds:
            part = Slice(data.source, data.events[: int(length * rate)], data.next_searches)
            arms: list[ArmResult] = []
            for name in arm:
                config = arm_config(base, f"{name}-{length:g}s", **ARMS[name])
                arms.append(run_arm(f"{name} {length:g}s", config, model, part, rate,
                                    warmup_s, drain_timeout_s, console.print,
                                    x2q=index))  # fmt: skip
            runs.append((length, arms))
    finally:
        model.stop()
    wide = Console(width=max(console.width, 160))
    for length, arms in runs:
        wide.print(_lag_table(arms))
        title = (
            f"aigq bench e2e: {data.source}, {length:g} s at {rate:,.0f}/s; model "
            f"{model.model_version} on {model.name}; flush {flush_interval_s:g} s; "
            f"micro-batch {batch_size}"
        )
        wide.print(_arm_table(arms, title))
        for result in arms:
            console.print(f"{result.name} reasons: {_reasons(result)}", highlight=False)
            if result.ctr:
                ctr = "; ".join(f"{c.version} {c.clicked:,}/{c.exposures:,} = {c.ctr:.4f}"
                                for c in result.ctr)  # fmt: skip
                console.print(f"{result.name} served CTR (simulated): {ctr}", highlight=False)
    for line in goals(runs):
        console.print(line, highlight=False)


def goals(runs: list[tuple[float, list[ArmResult]]]) -> list[str]:
    """Issue 17's goals, met or not, from the runs (the first arm is the one judged)."""
    out = []
    for _, arms in runs:
        judged = arms[0]
        fresh = percentile(judged.stages.freshness, 0.99)
        out.append(goal_line(f"{judged.name}: freshness p99", f"{fresh / 1000:,.1f} s", "<= 10 s",
                         fresh <= 10_000))  # fmt: skip
        drained = judged.drive.drained and judged.drive.drain_s <= 5
        out.append(goal_line(f"{judged.name}: drained after the replay",
                         f"{judged.drive.drain_s:.1f} s" if judged.drive.drained else "no",
                         "<= 5 s", drained))  # fmt: skip
        for other in arms[1:]:
            ok = judged.hit_rate.rate >= other.hit_rate.rate
            out.append(goal_line(f"{judged.name}: served-list HR vs {other.name}",
                             f"{judged.hit_rate.rate:.4f} vs {other.hit_rate.rate:.4f}",
                             ">=", ok))  # fmt: skip
            mine, theirs = judged.list_hit_rate, other.list_hit_rate
            out.append(goal_line(f"{judged.name}: generated-list hits vs {other.name}",
                             f"{mine.hits:,} vs {theirs.hits:,}", ">=",
                             mine.hits >= theirs.hits))  # fmt: skip
    if len(runs) > 1:
        (short, first), (long, last) = runs[0], runs[-1]
        lag_short, lag_long = lag_summary(first[0].drive.lag)[1], lag_summary(last[0].drive.lag)[1]
        bounded = lag_long <= max(1.5 * lag_short, lag_short + 200)
        out.append(goal_line(f"{first[0].name.split()[0]}: generator backlog, {short:g} s vs "
                         f"{long:g} s replay", f"max {lag_short:,} vs {lag_long:,}",
                         "does not grow with the length", bounded))  # fmt: skip
    return out
