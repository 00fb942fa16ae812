"""The read API's commands: ``aigq serve`` and ``aigq bench serve``."""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from aigq.cli_kit import console, fails_cleanly, goal_line
from aigq.settings import RedisSettings, load

if TYPE_CHECKING:
    from cache.bench import BenchReport


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

    Configured by AIGQ_SERVE_* (bind, port, workers, API keys, exposure logging),
    AIGQ_HINTS_* (composition, timeouts), AIGQ_REDIS_* and, with AIGQ_SERVE_LOG_EXPOSURES,
    AIGQ_KAFKA_* and AIGQ_TOPICS_*; stops on SIGTERM/SIGINT.
    """
    from aigq.errors import ConfigError
    from aigq.events import MAX_SHOWN_QUERIES
    from aigq.settings import KafkaSettings, TopicSettings
    from cache.api import run_server
    from cache.settings import HintSettings, ServeSettings

    given = {"bind": bind, "port": port, "workers": workers}
    settings = load(ServeSettings, **{k: v for k, v in given.items() if v is not None})
    hints = load(HintSettings)  # each worker reads these again; a bad value fails here, once
    load(RedisSettings)
    if settings.log_exposures:
        load(KafkaSettings)
        load(TopicSettings)
        if hints.max_k > MAX_SHOWN_QUERIES:
            raise ConfigError(
                f"AIGQ_HINTS_MAX_K: at most {MAX_SHOWN_QUERIES} with AIGQ_SERVE_LOG_EXPOSURES"
            )
    run_server(settings)


def bench_serve(
    users: Annotated[int, typer.Option(min=1_000, help="users with entries in Redis")] = 100_000,
    rate: Annotated[float, typer.Option(min=1, help="fixed request rate, per second")] = 2_000.0,
    duration: Annotated[float, typer.Option(min=1, help="seconds measured per phase")] = 10.0,
    warmup: Annotated[float, typer.Option(min=0, help="seconds before measuring")] = 2.0,
    connections: Annotated[int, typer.Option(min=1, help="client concurrency")] = 32,
    workers: Annotated[int, typer.Option(min=1, help="server workers")] = 1,
    rounds: Annotated[int, typer.Option(min=1, help="round-robin runs (medians count)")] = 3,
    pause: Annotated[float, typer.Option(min=0, help="idle seconds before each phase")] = 0.0,
    server: Annotated[
        list[str],
        typer.Option(help="AIGQ_SERVE_SERVER of the API; repeat to run others beside the first"),
    ] = ["uvicorn"],  # noqa: B006 (typer reads the default; never mutated)
    exposures: Annotated[
        bool,
        typer.Option(
            "--exposures",
            help="also run the first server with exposure logging on, against a throwaway "
            "broker, in the same rounds",
        ),
    ] = False,
) -> None:
    """The read API at a fixed rate and flat out, against raw Redis GETs, side by side."""
    import os

    from cache.bench import EXPOSURES, BenchConfig, run_bench

    known = ("uvicorn", "granian")
    if not server or any(name not in known for name in server) or len(set(server)) < len(server):
        raise typer.BadParameter(f"--server: distinct names among {', '.join(known)}")
    config = BenchConfig(
        users, rate, duration, warmup, connections, workers, rounds=rounds, pause_s=pause,
        servers=tuple(server), exposures=exposures,
    )  # fmt: skip
    load_avg = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    console.print(f"{os.cpu_count()} cores, load average {load_avg}", highlight=False)
    report = run_bench(
        load(RedisSettings), config, lambda line: console.print(line, highlight=False)
    )
    table = Table(
        title=f"aigq bench serve: {users:,} users, {connections} connections, "
        f"{workers} worker(s), {duration:g} s per phase, medians of {rounds} rounds"
    )
    columns = ("phase", "req/s", "p50 ms", "p99 ms", "p99.9 ms", "non-200")
    for name in (*columns, "CPU s: generator", "API", "Redis", "steal", "runs"):
        table.add_column(name, justify="left" if name == "phase" else "right", no_wrap=True)
    labels = {
        "ceiling": "generator ceiling (canned server)",
        "api_rate": f"API at {rate:,.0f} req/s ({server[0]})",
        "api_max": f"API flat out ({server[0]})",
        **{f"api_rate {s}": f"API at {rate:,.0f} req/s ({s})" for s in server[1:]},
        **{f"api_max {s}": f"API flat out ({s})" for s in server[1:]},
        f"api_rate {EXPOSURES}": f"API at {rate:,.0f} req/s ({server[0]}, exposures logged)",
        f"api_max {EXPOSURES}": f"API flat out ({server[0]}, exposures logged)",
        "redis_get": "raw Redis GET (redis.asyncio)",
    }
    for name, runs in report.phases.items():
        statuses = [(k, v) for r in runs for k, v in r.result["statuses"].items()]
        bad = sum(v for k, v in statuses if k != "200") + sum(r.result["errors"] for r in runs)
        each = (
            ", ".join(f"p99 {r.result['p99_ms']:.2f}" for r in runs)
            if name.startswith("api_rate")
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
        console.print(goal_line(name, value, goal, ok, note), highlight=False)
    for other in server[1:]:
        console.print(
            f"API flat out, {other} / {server[0]}: [bold]{report.server_ratio(other):.2f}[/] "
            "(median of the rounds)",
            highlight=False,
        )
    if report.exposure_counts is not None:
        _print_exposures(report, rate)


def _print_exposures(report: BenchReport, rate: float) -> None:
    """The exposure-logging server against the same server without it (``--exposures``)."""
    from cache.bench import EXPOSURES

    on, counts = f"api_rate {EXPOSURES}", report.exposure_counts or {}
    broker = statistics.median(p.broker_cpu_s for p in report.phases[f"api_max {EXPOSURES}"])
    console.print(
        f"exposures logged / not: flat out [bold]{report.server_ratio(EXPOSURES):.2f}[/] "
        f"(median of the rounds); p99 at {rate:,.0f} req/s "
        f"{report.median(on, 'p99_ms'):.2f} ms against {report.median('api_rate', 'p99_ms'):.2f}"
        f" ms, p50 {report.median(on, 'p50_ms'):.2f} against "
        f"{report.median('api_rate', 'p50_ms'):.2f}; broker CPU {broker:.1f} s per flat-out phase",
        highlight=False,
    )
    dropped = {k: v for k, v in counts.items() if k not in ("sent", "lists") and v}
    console.print(
        f"exposures: {counts.get('sent', 0):,} sent to Kafka of {counts['lists']:,} non-empty "
        f"lists served; dropped: {dropped or 'none'}",
        highlight=False,
    )


def register(app: typer.Typer, bench: typer.Typer) -> None:
    """Add this subsystem's commands to the root command (:mod:`shell.cli`)."""
    app.command("serve")(fails_cleanly(serve))
    bench.command("serve")(fails_cleanly(bench_serve))
