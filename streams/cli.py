"""The streaming subsystem's commands: ``aigq replay``, ``aigq worker``, ``aigq backfill``,
``aigq simulate`` and ``aigq bench stream``."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from aigq.cli_kit import console, fails_cleanly, goal_line
from aigq.datasets.sources import SOURCE_NAMES
from aigq.datasets.synthetic import SyntheticConfig
from aigq.errors import AigqError
from aigq.settings import KafkaSettings, RedisSettings, TopicSettings, WebSettings, load
from streams.settings import StreamSettings


def replay(
    source: Annotated[str, typer.Argument(help="aol, bestbuy or synthetic")],
    path: Annotated[
        Path | None, typer.Option(help="file or folder to read (default: under the data dir)")
    ] = None,
    topic_prefix: Annotated[
        str | None, typer.Option(help="topics are <prefix>.<kind> (default AIGQ_TOPICS_PREFIX)")
    ] = None,
    speed: Annotated[str, typer.Option(help="'max', or N x log time (60: 1 min/s)")] = "max",
    limit: Annotated[int | None, typer.Option(min=1, help="stop after N events")] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="producer processes (default: cores, at most 4)")
    ] = None,
    users: Annotated[int, typer.Option(min=1, help="synthetic: number of users")] = 200,
    days: Annotated[int, typer.Option(min=1, help="synthetic: days of activity")] = 7,
    seed: Annotated[int, typer.Option(help="synthetic: random seed")] = 0,
) -> None:
    """Produce a source's events to Kafka, keyed by user, in time order; print events/s."""
    # Imported here, as every command's own packages are: the root command imports this module.
    from streams.replay import ReplaySettings, parse_speed
    from streams.replay_workers import ReplayJob, SourceSpec, default_workers, replay_with_workers

    settings = load(ReplaySettings)
    topics = load(TopicSettings, **({"prefix": topic_prefix} if topic_prefix else {}))
    try:
        job = ReplayJob(
            source=SourceSpec(source, path, settings.data_dir, SyntheticConfig(users, days, seed)),
            kafka=load(KafkaSettings),
            settings=settings,
            topics=topics,
            speed=parse_speed(speed),
            limit=limit,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    if source not in SOURCE_NAMES:
        raise typer.BadParameter(f"unknown source {source!r}; expected one of {SOURCE_NAMES}")

    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>9,.0f} ev/s"),
        TimeElapsedColumn(),
        console=console,
        disable=not console.is_terminal,
    )
    started = time.monotonic()
    with progress:
        task = progress.add_task(f"replay {source}", total=limit, rate=0.0)

        def show(sent: int) -> None:
            rate = sent / max(time.monotonic() - started, 1e-9)
            progress.update(task, completed=sent, rate=rate)

        report, first_error = replay_with_workers(job, workers or default_workers(), show)
        show(report.events)

    table = Table(title=f"replay {source} → {job.kafka.bootstrap_servers}")
    table.add_column("topic")
    table.add_column("records", justify="right")
    for kind, count in sorted(report.produced.items()):
        table.add_row(topics.name(kind), f"{count:,}")  # type: ignore[arg-type]
    console.print(table)
    console.print(
        f"{report.events:,} events in {report.elapsed_s:.2f} s = "
        f"[bold]{report.events_per_s:,.0f} events/s[/] ({workers or default_workers()} "
        f"producers); malformed lines: {report.malformed:,} "
        f"(sent to {topics.name('dead_letter')}); failed sends: {report.failed:,}"
    )
    if report.failed:
        raise AigqError(f"{report.failed} sends were not acknowledged; first: {first_error}")


def worker() -> None:
    """Run the session agents: session state, interest-change triggers, regeneration requests.

    Configured by AIGQ_KAFKA_*, AIGQ_TOPICS_*, AIGQ_WEB_*, AIGQ_STREAM_* and AIGQ_REDIS_*
    (users' recent triggers for the read API); stops on SIGTERM.
    """
    from streams.worker import SessionWorker  # Faust is heavy: import it only to run it

    SessionWorker(
        load(KafkaSettings),
        load(TopicSettings),
        load(WebSettings),
        load(StreamSettings),
        redis=load(RedisSettings),
    ).run()


def simulate() -> None:
    """Simulate hint clicks for logs without hint feedback: a click when a user's real next
    search matches a hint shown to them (docs/simulator.md).

    Reads <prefix>.hint_exposure and <prefix>.search, writes <prefix>.hint_click; configured by
    AIGQ_SIMULATOR_*, AIGQ_KAFKA_* and AIGQ_TOPICS_*; stops on SIGTERM/SIGINT and prints its
    counts.
    """
    import asyncio
    import signal

    from streams.simulate import PROCESS_KEYS, Simulate  # aiokafka: imported only to run it
    from streams.simulator import COUNT_KEYS, SimulatorSettings

    settings = load(SimulatorSettings)
    process = Simulate(load(KafkaSettings), load(TopicSettings), settings)
    if settings.metrics_port:
        process.metrics.serve(settings.metrics_port, settings.metrics_bind)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, process.stop)
        await process.run()

    asyncio.run(run())
    counts = process.counts
    console.print(
        f"simulate: pending {process.simulator.pending:,}; "
        + ", ".join(f"{k} {counts[k]:,}" for k in (*COUNT_KEYS, *PROCESS_KEYS)),
        highlight=False,
    )


def _instant(text: str) -> int:
    """UTC epoch ms from ``2026-01-02``, ``2026-01-02T10:00`` (UTC unless it says) or ms."""
    if text.strip().isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise typer.BadParameter(f"{text!r} is neither an ISO date/time nor epoch ms") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def backfill(
    since: Annotated[str, typer.Option(help="from this event time (ISO, UTC by default, or ms)")],
    until: Annotated[str, typer.Option(help="up to, not including, this event time")],
    generate: Annotated[bool, typer.Option(help="emit regeneration requests")] = True,
    max_regenerations_per_s: Annotated[
        float, typer.Option(min=0, help="cap on requests (0: none)")
    ] = 50.0,
    app_id: Annotated[
        str | None, typer.Option(help="state and consumer group (default <worker app>-backfill)")
    ] = None,
) -> None:
    """Rebuild session state from a time range of the event topics; safe to run twice."""
    from streams.backfill import backfill as run_backfill
    from streams.backfill import changelog_topic

    settings = load(StreamSettings)
    target = app_id or f"{settings.app_id}-backfill"
    try:
        report = run_backfill(
            load(KafkaSettings),
            load(TopicSettings),
            settings,
            since_ms=_instant(since),
            until_ms=_instant(until),
            app_id=target,
            generate=generate,
            max_regenerations_per_s=max_regenerations_per_s,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    rate = report.applied / report.elapsed_s if report.elapsed_s else 0.0
    console.print(
        f"backfill into {changelog_topic(target)}: applied {report.applied:,} events "
        f"({rate:,.0f}/s), skipped {report.skipped:,} already applied, "
        f"{report.outside:,} outside the range; requests {report.requests:,}, "
        f"dead letters {report.dead_letters:,}",
        highlight=False,
    )
    console.print(
        "decisions: " + ", ".join(f"{k} {v:,}" for k, v in sorted(report.outcomes.items())),
        highlight=False,
    )


def bench_stream(
    events: Annotated[int, typer.Option(min=1_000, help="events to produce and consume")] = 200_000,
    users: Annotated[int, typer.Option(min=1, help="synthetic users")] = 2_000,
    partitions: Annotated[int, typer.Option(min=1, help="partitions per topic")] = 8,
    variant: Annotated[
        list[str] | None, typer.Option(help="run only these (aiokafka, faust_count, ...)")
    ] = None,
    rounds: Annotated[int, typer.Option(min=1, help="runs of each variant (medians compared)")] = 3,
) -> None:
    """Our session agent against a raw consumer, a counting and a per-event-table Faust agent."""
    from streams.bench import VARIANTS, median_rates, run_bench

    chosen = tuple(variant or VARIANTS)
    unknown = set(chosen) - set(VARIANTS)
    if unknown:
        raise typer.BadParameter(f"unknown variants {sorted(unknown)}; expected {VARIANTS}")
    runs = run_bench(events, users, partitions, chosen, rounds)
    rates = median_rates(runs)
    table = Table(title=f"aigq bench stream: {events:,} events, {partitions} partitions")
    table.add_column("consumer")
    table.add_column("events/s (median)", justify="right")
    table.add_column("runs", justify="right")
    for name, rate in rates.items():
        each = ", ".join(f"{r.rate:,.0f}" for r in runs if r.variant == name)
        table.add_row(name, f"{rate:,.0f}", each)
    console.print(table)
    ours = rates.get("sessions")
    for base, goal in (("faust_count", 0.8), ("faust_table", 2.5), ("aiokafka", None)):
        if ours is not None and rates.get(base):
            ratio = ours / rates[base]
            name, value = f"sessions / {base}", f"{ratio:.2f}"
            line = f"{name}: [bold]{value}[/]"
            if goal is not None:
                line = goal_line(name, value, f">= {goal}", ratio >= goal)
            console.print(line, highlight=False)
    if ours and rates.get("sessions_recent"):
        console.print(
            f"sessions_recent / sessions: {rates['sessions_recent'] / ours:.2f} "
            "(the cost of writing users' recent triggers to Redis)",
            highlight=False,
        )


def register(app: typer.Typer, bench: typer.Typer) -> None:
    """Add this subsystem's commands to the root command (:mod:`shell.cli`)."""
    app.command("replay")(fails_cleanly(replay))
    app.command("worker")(fails_cleanly(worker))
    app.command("backfill")(fails_cleanly(backfill))
    app.command("simulate")(fails_cleanly(simulate))
    bench.command("stream")(fails_cleanly(bench_stream))
