"""``aigq x2q build``: fill the x2q index and the popular set from a log's last N days.

Configured by ``AIGQ_X2Q_*`` (:class:`generators.x2q_settings.X2QSettings`; options override
them) and ``AIGQ_REDIS_*``. The work is :func:`generators.x2q_build.build_index`.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from aigq.cli_kit import console, fails_cleanly
from aigq.datasets.base import Malformed
from aigq.datasets.sources import open_source
from aigq.errors import ConfigError
from aigq.redis_clients import open_redis
from aigq.registry import Registry
from aigq.settings import KafkaSettings, RedisSettings, TopicSettings, load
from generators.x2q_build import BuildReport, Checkpoint, build_index
from generators.x2q_settings import X2QSettings
from generators.x2q_triggers import DAY_MS, Popularity, SeenTrigger, collect, window

x2q_app = typer.Typer(help="The x2q index: AIGQ-Think's trigger -> queries lists (offline).")


def _model(settings: X2QSettings) -> tuple[str, str]:
    """(what the backend loads, the version recorded): a folder as it is, a registry name
    resolved (``aigq-think`` is the newest Think model); a server's name as it is."""
    if settings.backend == "vllm-http":
        return settings.model, settings.model
    if Path(settings.model).is_dir():
        return settings.model, Path(settings.model).name
    ref = Registry().resolve(settings.model)
    return str(ref.path), ref.tag


def _day(text: str) -> int:
    try:
        return int(time.mktime(time.strptime(text, "%Y-%m-%d")) - time.timezone) * 1000
    except ValueError as exc:
        raise ConfigError(f"--until must be YYYY-MM-DD, got {text!r}") from exc


def build(
    source: Annotated[
        str, typer.Option(help="topics (the event topics), or a log: aol, bestbuy, synthetic")
    ] = "aol",
    data_dir: Annotated[Path, typer.Option(help="where the logs are")] = Path("../shared/data"),
    path: Annotated[
        Path | None, typer.Option(help="the log itself (default: data-dir/source)")
    ] = None,
    until: Annotated[
        str,
        typer.Option(help="YYYY-MM-DD: the window ends there (default: a log's last day, or now)"),
    ] = "",
    days: Annotated[int | None, typer.Option(help="window length (AIGQ_X2Q_DAYS)")] = None,
    model: Annotated[str | None, typer.Option(help="Think model (AIGQ_X2Q_MODEL)")] = None,
    max_triggers: Annotated[int | None, typer.Option(help="most seen only (0: all)")] = None,
    report: Annotated[Path | None, typer.Option(help="write the figures here (JSON)")] = None,
) -> None:
    """Build a new x2q index version from the window's triggers, then switch to it atomically.

    Resumable: run it again after a failure and it goes on where it stopped.
    """
    overrides: dict[str, Any] = {
        key: value
        for key, value in (("days", days), ("model", model), ("max_triggers", max_triggers))
        if value is not None
    }
    settings = load(X2QSettings, **overrides)
    redis_settings = load(RedisSettings)
    kafka, topics = load(KafkaSettings), load(TopicSettings)
    started = time.perf_counter()
    if source == "topics":
        from generators.x2q_topics import read_window  # kafka-python: only for this source

        end = _day(until) if until else int(time.time() * 1000)
        since, end = window(end, settings.days)
        events, counts = read_window(kafka, topics, since, end)
        read = dict(counts)
        span = (min(e.ts for e in events), max(e.ts for e in events) + 1) if events else (0, 1)
    else:
        events, malformed = _log(source, data_dir, path)
        end = _day(until) if until else max(e.ts for e in events) // DAY_MS * DAY_MS + DAY_MS
        span = since, end = window(end, settings.days)
        read = {"kept": len(events), "malformed": malformed}
    triggers, popularity = collect(events, *span)
    if settings.max_triggers:
        triggers = triggers[: settings.max_triggers]
    read_s = time.perf_counter() - started
    console.print(
        f"{source}: {read} in {read_s:.1f} s; {len(triggers):,} triggers in the "
        f"{settings.days} days before {time.strftime('%Y-%m-%d %H:%M', time.gmtime(end / 1000))}",
        highlight=False,
    )
    result = asyncio.run(_build(settings, redis_settings, triggers, popularity))
    figures = {
        "source": source, "window": [since, end], "days": settings.days, "read": read,
        "read_s": read_s, **result.as_dict(),
    }  # fmt: skip
    console.print(_summary(figures), highlight=False)
    if report is not None:
        report.write_text(json.dumps(figures, indent=2) + "\n")


def _log(source: str, data_dir: Path, path: Path | None) -> tuple[list[Any], int]:
    """A log's events and how many of its lines were malformed (skipped, counted)."""
    events, malformed = [], 0
    for item in open_source(source, path, data_dir):
        if isinstance(item, Malformed):
            malformed += 1
        else:
            events.append(item)
    if not events:
        raise ConfigError(f"no events in the {source} source")
    return events, malformed


async def _build(
    settings: X2QSettings,
    redis_settings: RedisSettings,
    triggers: list[SeenTrigger],
    popularity: Popularity,
) -> BuildReport:
    from cache.popular import PopularQueries
    from cache.x2q import X2QStore

    folder, version = _model(settings)
    redis = open_redis(redis_settings)
    prefix = redis_settings.key_prefix
    store = X2QStore(redis, prefix, ttl_s=settings.ttl_s, max_queries=settings.keep,
                     grace_s=settings.grace_s)  # fmt: skip
    try:
        async with settings.open_backends(folder, version) as (backend, retry):
            with Progress(*_COLUMNS, console=console) as bar:
                return await build_index(
                    triggers, popularity, backend, store, Checkpoint(redis, prefix),
                    settings.build_config(version), popular=PopularQueries(redis, prefix),
                    progress=_progress(bar), retry=retry,
                )  # fmt: skip
    finally:
        await redis.aclose()


_COLUMNS = (
    TextColumn("[bold]x2q"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
    TextColumn("{task.fields[stats]}"),
)  # fmt: skip


def _progress(bar: Progress) -> Any:
    task = bar.add_task("x2q", total=1, stats="")
    lines = [0]

    def progress(done: int, total: int, report: BuildReport) -> None:
        line = (
            f"{report.triggers_per_s:,.1f} triggers/s  covered {report.covered:,}  "
            f"empty {report.no_queries:,}"
        )
        bar.update(task, completed=done, total=max(total, 1), stats=line)
        if not console.is_terminal and (done - lines[0] >= 500 or done == total):
            lines[0] = done
            console.print(f"x2q {done}/{total}  {line}", highlight=False)

    return progress


def _summary(figures: dict[str, Any]) -> str:
    resumed = f", resumed at {figures['resumed_at']:,}" if figures["resumed_at"] else ""
    return (
        f"x2q {figures['version']} is live (model {figures['model']}; was "
        f"{figures['previous'] or 'none'}): "
        f"{figures['covered']:,} of {figures['triggers']:,} triggers covered "
        f"({figures['coverage']:.1%}), {figures['queries']:,} queries{resumed}; "
        f"{figures['rescued']:,} of them on a second, sampled try; "
        f"{figures['triggers_per_s']:.1f} triggers/s ({figures['seconds']:.1f} s, model "
        f"{figures['model_seconds']:.1f} s); popular set {figures['popular']} queries; "
        f"Think-output problems: {figures['problems'] or 'none'}"
    )


def register(app: typer.Typer) -> None:
    x2q_app.command("build")(fails_cleanly(build))
    app.add_typer(x2q_app, name="x2q")
