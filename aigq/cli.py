"""The ``aigq`` command line: ``aigq dev up|down|status`` and ``aigq replay``.

Settings are read from the environment here, in the command being run, never at import time.
Every project error is printed as one red line with exit status 1.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from aigq import __version__
from aigq.datasets.sources import SOURCE_NAMES
from aigq.datasets.synthetic import SyntheticConfig
from aigq.dev.stack import DevSettings, DevStack, StackState
from aigq.errors import AigqError
from aigq.logging import configure_logging
from aigq.settings import KafkaSettings, RedisSettings, TopicSettings, WebSettings, load
from generators.settings import GeneratorSettings
from streams.replay import ReplaySettings, parse_speed
from streams.replay_workers import ReplayJob, SourceSpec, default_workers, replay_with_workers
from streams.settings import StreamSettings
from training.cli_train import train_app

P = ParamSpec("P")
R = TypeVar("R")

app = typer.Typer(help="aigq-nearline: fresh personalised hint queries from event streams.")
dev_app = typer.Typer(help="The local development stack: tansu broker, Redis, topics.")
app.add_typer(dev_app, name="dev")
bench_app = typer.Typer(help="Benchmarks that print figures measured side by side in one run.")
app.add_typer(bench_app, name="bench")
app.add_typer(train_app, name="train")
console = Console()
err_console = Console(stderr=True)


def _fails_cleanly(command: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except AigqError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
            raise typer.Exit(1) from exc

    return wrapper


@app.callback()
def _root(
    log_level: Annotated[str, typer.Option(envvar="AIGQ_LOG_LEVEL", help="DEBUG..ERROR")] = "INFO",
) -> None:
    configure_logging(log_level)


@app.command()
def version() -> None:
    """Print the version."""
    console.print(__version__)


def _dev_stack() -> DevStack:
    return DevStack(
        load(KafkaSettings), load(RedisSettings), load(TopicSettings), load(DevSettings)
    )


@dev_app.command("up")
@_fails_cleanly
def dev_up() -> None:
    """Start the broker (and Redis if none answers), create the topics. Safe to rerun."""
    stack = _dev_stack()
    state = stack.up()
    started = ", ".join(state.started) if state.started else "nothing (already running)"
    console.print(f"[green]dev stack up[/]; started: {started}")
    _print_state(stack, state)


@dev_app.command("down")
@_fails_cleanly
def dev_down() -> None:
    """Stop what `aigq dev up` started; leave everything else alone."""
    stack = _dev_stack()
    stopped = stack.down()
    console.print(f"stopped: {', '.join(stopped) if stopped else 'nothing of ours was running'}")


@dev_app.command("status")
@_fails_cleanly
def dev_status() -> None:
    """Show the broker, Redis and topics; exit 1 if the broker or Redis is down."""
    stack = _dev_stack()
    if not _print_state(stack):
        raise typer.Exit(1)


def _print_state(stack: DevStack, state: StackState | None = None) -> bool:
    state = state or stack.status()
    table = Table(title="aigq dev stack")
    table.add_column("service")
    table.add_column("address", no_wrap=True)  # copied into other commands: never folded
    table.add_column("state", overflow="fold")
    table.add_column("owner", overflow="fold")
    logs = []
    for svc in (state.broker, state.redis):
        owner = f"aigq (pid {svc.pid})" if svc.pid else ("external" if svc.reachable else "-")
        table.add_row(
            svc.name,
            svc.address,
            f"[green]up[/] {svc.detail}" if svc.reachable else "[red]down[/]",
            owner,
        )
        if svc.pid and svc.log:
            logs.append(f"{svc.name} log: {svc.log}")
    console.print(table)
    for line in logs:
        console.print(line, highlight=False, soft_wrap=True)
    if state.topics:
        topics = Table(title="topics")
        topics.add_column("topic")
        topics.add_column("partitions", justify="right")
        for topic in state.topics:
            mark = " (created now)" if topic.created else ""
            topics.add_row(topic.name, f"{topic.partitions or 'missing'}{mark}")
        console.print(topics)
    console.print(f"state dir: {stack.dev.state_dir.resolve()}", highlight=False, soft_wrap=True)
    return state.broker.reachable and state.redis.reachable


@app.command()
@_fails_cleanly
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


@app.command()
@_fails_cleanly
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


def _local_model(settings: GeneratorSettings) -> GeneratorSettings:
    """For the in-process backends, a model that is not a folder is a registry name.

    So ``aigq generate`` with the transformers or vllm backend loads the registry's latest
    ``aigq-direct`` (what ``aigq train sft`` publishes) unless told otherwise, and records its
    ``name@version`` with every run. The vllm-http backend names what the server serves.
    """
    if settings.backend == "vllm-http" or Path(settings.model).is_dir():
        return settings
    from training.registry import Registry

    ref = Registry().resolve(settings.model)
    version = settings.model_version or ref.tag
    return settings.model_copy(update={"model": str(ref.path), "model_version": version})


@app.command()
@_fails_cleanly
def generate() -> None:
    """Run the generator: regeneration requests in, hint-query lists into the u2q cache.

    Configured by AIGQ_GENERATE_* (backend, model, batching, retries), AIGQ_KAFKA_*,
    AIGQ_TOPICS_* and AIGQ_REDIS_*; stops on SIGTERM/SIGINT after committing what is done.
    """
    import asyncio
    import signal

    from generators.settings import GeneratorSettings
    from generators.worker import GeneratorWorker

    settings = _local_model(load(GeneratorSettings))
    worker = GeneratorWorker(
        load(KafkaSettings), load(TopicSettings), load(RedisSettings), settings
    )
    if settings.metrics_port:
        worker.metrics.serve(settings.metrics_port, settings.metrics_bind)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.stop)
        await worker.run()

    asyncio.run(run())


@app.command()
@_fails_cleanly
def serve(
    bind: Annotated[
        str | None, typer.Option(help="address to listen on (default AIGQ_SERVE_BIND, loopback)")
    ] = None,
    port: Annotated[int | None, typer.Option(help="default AIGQ_SERVE_PORT (8080)")] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="uvicorn workers (default AIGQ_SERVE_WORKERS, 1)")
    ] = None,
) -> None:
    """Run the read API: GET /v1/hints/{user_id}?k=10, /healthz, /readyz, /metrics, /docs.

    Configured by AIGQ_SERVE_* (bind, port, workers, API keys), AIGQ_HINTS_* (composition,
    timeouts) and AIGQ_REDIS_*; stops on SIGTERM/SIGINT.
    """
    from cache.api import run_server
    from cache.settings import HintSettings, ServeSettings

    given = {"bind": bind, "port": port, "workers": workers}
    settings = load(ServeSettings, **{k: v for k, v in given.items() if v is not None})
    load(HintSettings)  # each worker reads these again; a bad value fails here, once
    load(RedisSettings)
    run_server(settings)


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


@app.command()
@_fails_cleanly
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


@bench_app.command("stream")
@_fails_cleanly
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
            verdict = ""
            if goal is not None:
                verdict = f" (goal >= {goal}: {'met' if ratio >= goal else 'NOT met'})"
            console.print(f"sessions / {base}: [bold]{ratio:.2f}[/]{verdict}", highlight=False)
    if ours and rates.get("sessions_recent"):
        console.print(
            f"sessions_recent / sessions: {rates['sessions_recent'] / ours:.2f} "
            "(the cost of writing users' recent triggers to Redis)",
            highlight=False,
        )


@bench_app.command("generate")
@_fails_cleanly
def bench_generate(
    model: Annotated[
        Path | None, typer.Option(help="model folder (default: a tiny random model built here)")
    ] = None,
    data_dir: Annotated[Path, typer.Option(help="holds aol/")] = Path("../shared/data"),
    requests: Annotated[int, typer.Option(min=8, help="AOL requests for compression")] = 500,
    batched: Annotated[int, typer.Option(min=4, help="prompts for the batching test")] = 64,
    batch_size: Annotated[int, typer.Option(min=2, help="micro-batch size")] = 32,
    fresh: Annotated[int, typer.Option(min=1, help="requests through the worker")] = 200,
    rate: Annotated[float, typer.Option(min=0.1, help="their rate, per second")] = 20.0,
) -> None:
    """Prompt compression, micro-batched vs one-at-a-time throughput, and freshness."""
    import asyncio

    from aigq.dev.probe import free_port
    from generators import bench
    from generators.vllm_server import start_vllm_server, stop_vllm_server

    tmp = bench.tmpdir()
    aol = data_dir / "aol"
    if not aol.exists():
        raise typer.BadParameter(f"no AOL log at {aol}")
    reqs = bench.aol_requests(aol, max_events=400_000, max_requests=requests)
    console.print(f"{len(reqs)} regeneration requests from real AOL sessions")
    label = str(model)
    if model is None:
        from training.tiny import build_tiny_model

        model = build_tiny_model(tmp / "tiny", bench.corpus(aol, reqs))
        label = "tiny Qwen2 (random weights; tokenizer trained on AOL text and prompts)"
    from transformers import AutoTokenizer

    comp = bench.compression(reqs, AutoTokenizer.from_pretrained(str(model)), k=10)
    proc, url, startup = start_vllm_server(model, tmp / "vllm.log")
    stack = DevStack(
        KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}"),
        RedisSettings(),
        TopicSettings(prefix=f"benchgen{bench.run_id()}", partitions=4),
        DevSettings(state_dir=tmp / "stack", start_redis=False),
    )
    try:
        settings = GeneratorSettings(
            base_url=url, batch_size=batch_size, max_tokens=64, k=10,
            cache_prefix=f"bench:{bench.run_id()}:", group_id=f"bench-{bench.run_id()}",
        )  # fmt: skip
        from generators.requests import prompt_for

        prompts = [prompt_for(r, 10) for r in reqs[:batched]]
        single, many = asyncio.run(bench.batching(settings, prompts))
        stack.up()
        fr = asyncio.run(
            bench.freshness(stack.kafka, stack.topics, stack.redis, settings, reqs[:fresh], rate)
        )
    finally:
        stop_vllm_server(proc)
        stack.down()
    table = Table(title=f"aigq bench generate: vLLM server on the CPU, model: {label}")
    table.add_column("what")
    table.add_column("figure", justify="right")
    table.add_row("vLLM start-up", f"{startup:.1f} s")
    table.add_row(
        "prompt tokens, compressed / verbose",
        f"{comp.ratio:.3f} ({comp.compressed_tokens:,} / {comp.verbose_tokens:,} over "
        f"{comp.prompts} prompts; median per prompt {bench.median(comp.per_prompt):.3f})",
    )
    table.add_row("one at a time", f"{single:.2f} requests/s")
    table.add_row(f"micro-batched ({batch_size})", f"{many:.2f} requests/s")
    table.add_row("batched / one at a time", f"{many / single:.2f}x")
    f = fr.freshness_ms
    table.add_row(
        f"freshness, {fr.requests} requests at {rate:g}/s",
        f"p50 {fr.pct(f, 0.5):,.0f} ms, p99 {fr.pct(f, 0.99):,.0f} ms ({len(f)} written)",
    )
    m = fr.model_ms
    table.add_row(
        "  of which model time (batch)",
        f"p50 {fr.pct(m, 0.5):,.0f} ms, p99 {fr.pct(m, 0.99):,.0f} ms",
    )
    rest = [a - b for a, b in zip(f, m, strict=False)]
    table.add_row(
        "  freshness minus model time",
        f"p50 {fr.pct(rest, 0.5):,.0f} ms, p99 {fr.pct(rest, 0.99):,.0f} ms",
    )
    console.print(table)
    for name, value, goal, ok in (
        ("compressed / verbose", comp.ratio, "<= 0.4", comp.ratio <= 0.4),
        ("batched / one at a time", many / single, ">= 4", many / single >= 4),
    ):
        verdict = "met" if ok else "NOT met"
        console.print(f"{name}: [bold]{value:.2f}[/] (goal {goal}: {verdict})", highlight=False)


@bench_app.command("serve")
@_fails_cleanly
def bench_serve(
    users: Annotated[int, typer.Option(min=1_000, help="users with entries in Redis")] = 100_000,
    rate: Annotated[float, typer.Option(min=1, help="fixed request rate, per second")] = 2_000.0,
    duration: Annotated[float, typer.Option(min=1, help="seconds measured per phase")] = 10.0,
    warmup: Annotated[float, typer.Option(min=0, help="seconds before measuring")] = 2.0,
    connections: Annotated[int, typer.Option(min=1, help="client concurrency")] = 32,
    workers: Annotated[int, typer.Option(min=1, help="uvicorn workers")] = 1,
    rounds: Annotated[int, typer.Option(min=1, help="round-robin runs (medians count)")] = 3,
    pause: Annotated[float, typer.Option(min=0, help="idle seconds before each phase")] = 0.0,
) -> None:
    """The read API at a fixed rate and flat out, against raw Redis GETs, side by side."""
    import os

    from cache.bench import BenchConfig, run_bench

    config = BenchConfig(
        users, rate, duration, warmup, connections, workers, rounds=rounds, pause_s=pause
    )
    load_avg = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    console.print(f"{os.cpu_count()} cores, load average {load_avg}", highlight=False)
    report = run_bench(
        load(RedisSettings), config, lambda line: console.print(line, highlight=False)
    )
    table = Table(
        title=f"aigq bench serve: {users:,} users, {connections} connections, "
        f"{workers} uvicorn worker(s), {duration:g} s per phase, medians of {rounds} rounds"
    )
    columns = ("phase", "req/s", "p50 ms", "p99 ms", "p99.9 ms", "non-200")
    for name in (*columns, "CPU s: generator", "API", "Redis", "steal", "runs"):
        table.add_column(name, justify="left" if name == "phase" else "right", no_wrap=True)
    labels = {
        "ceiling": "generator ceiling (canned server)",
        "api_rate": f"API at {rate:,.0f} req/s",
        "api_max": "API flat out",
        "redis_get": "raw Redis GET (redis.asyncio)",
    }
    for name, runs in report.phases.items():
        statuses = [(k, v) for r in runs for k, v in r.result["statuses"].items()]
        bad = sum(v for k, v in statuses if k != "200") + sum(r.result["errors"] for r in runs)
        each = (
            ", ".join(f"p99 {r.result['p99_ms']:.2f}" for r in runs)
            if name == "api_rate"
            else ", ".join(f"{r.result['rate']:,.0f}" for r in runs)
        )
        gen, api, red, steal = report.median_cpu(name)
        table.add_row(
            labels[name], f"{report.median(name, 'rate'):,.0f}",
            f"{report.median(name, 'p50_ms'):.2f}", f"{report.median(name, 'p99_ms'):.2f}",
            f"{report.median(name, 'p999_ms'):.2f}", f"{bad:,}",
            f"{gen:.1f}", f"{api:.1f}", f"{red:.1f}", f"{steal:.0%}", each,
        )  # fmt: skip
    Console(width=max(console.width, 175)).print(table)
    sources = sorted({h["source"] for h in report.sample["hints"]})
    console.print(
        f"sample response: {len(report.sample['hints'])} hints from {', '.join(sources)}; "
        f"u2q age {report.sample['u2q']['age_ms']:,} ms; data loaded in {report.load_s:.1f} s",
        highlight=False,
    )
    p99, achieved = report.median("api_rate", "p99_ms"), report.median("api_rate", "rate")
    ratios = ", ".join(f"{r:.2f}" for r in report.ratios())
    checks = (
        (f"p99 at {rate:,.0f} req/s", f"{p99:.2f} ms", "", "<= 5 ms",
         p99 <= 5.0 and achieved >= 0.98 * rate),
        ("API flat out / raw GET", f"{report.ratio():.2f}", f" (per round: {ratios})", ">= 0.5",
         report.ratio() >= 0.5),
    )  # fmt: skip
    for name, value, note, goal, ok in checks:
        verdict = "met" if ok else "NOT met"
        console.print(f"{name}: [bold]{value}[/]{note} (goal {goal}: {verdict})", highlight=False)


@bench_app.command("history")
@_fails_cleanly
def bench_history(
    data_dir: Annotated[Path, typer.Option(help="holds aol/")] = Path("../shared/data"),
    stand_in: Annotated[
        str, typer.Option(help="the u2q stand-in: cooccurrence or popular")
    ] = "cooccurrence",
    k: Annotated[int, typer.Option(min=1, help="list length scored")] = 10,
    history: Annotated[int, typer.Option(min=1, help="history queries a rule may use")] = 10,
) -> None:
    """Where the user's history goes in the served list: candidate rules on held-out AOL users
    (any-hit@k on each user's last search day; training.history_rules)."""
    from aigq.datasets.aol import iter_aol
    from training.history_rules import compare_rules

    if stand_in not in ("cooccurrence", "popular"):
        raise typer.BadParameter("--stand-in must be cooccurrence or popular")
    result = compare_rules(
        iter_aol(data_dir / "aol"),
        stand_in="popular" if stand_in == "popular" else "cooccurrence",
        k=k,
        history_n=history,
    )
    table = Table(
        title=f"aigq bench history: {result.evaluated:,} of {result.users:,} AOL users, "
        f"each held out once; u2q stand-in: {stand_in}; history: top {history}"
    )
    table.add_column("rule")
    table.add_column(f"any-hit@{k}", justify="right")
    table.add_column("users hit", justify="right")
    for score in result.scores:
        table.add_row(score.rule, f"{score.rate:.3f}", f"{score.hits:,}")
    console.print(table)
    console.print(
        f"users whose last day repeats one of their top {history} history queries: "
        f"{result.in_history:.3f}",
        highlight=False,
    )


from aigq.e2e.cli import bench_e2e_command, demo_command  # noqa: E402
from aigq.faults.cli import bench_faults_command  # noqa: E402
from training.cli_eval import eval_command  # noqa: E402

app.command("eval")(eval_command)
app.command("demo")(_fails_cleanly(demo_command))
bench_app.command("e2e")(_fails_cleanly(bench_e2e_command))
bench_app.command("faults")(_fails_cleanly(bench_faults_command))


def main() -> None:
    app()
