"""``aigq bench faults``: the whole loop under faults, one scenario after another."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from aigq.datasets.synthetic import SyntheticConfig, generate
from aigq.settings import RedisSettings, load
from shell.e2e.cli import terminate_as_interrupt
from shell.e2e.stack import LoopConfig, ModelServer
from shell.faults.report import notes, summary, table

# The suite (the loop's driver: aiohttp, aiokafka) is imported in the functions that use it,
# so that the root command imports only the base packages (tests/test_roles.py).

console = Console()


def tiny_model(folder: Path) -> Path:
    """A tiny random-weight model with a tokenizer trained on the synthetic shop's text: what
    it says does not matter here, only that every part of the loop runs."""
    from training.tiny import build_tiny_model

    texts = [
        str(getattr(item, "query", "") or getattr(item, "item_text", ""))
        for item in generate(SyntheticConfig(users=30, days=2, seed=1))
    ]
    return build_tiny_model(folder, [t for t in texts if t])


def chosen(only: str | None) -> list[str]:
    from shell.faults.suite import SCENARIOS

    if not only:
        return list(SCENARIOS)
    names = [n.strip() for n in only.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise typer.BadParameter(f"unknown scenarios {unknown}; expected {list(SCENARIOS)}")
    return names


def bench_faults_command(
    short: Annotated[bool, typer.Option(help="the CI form: fewer events, shorter outages")] = False,
    only: Annotated[str | None, typer.Option(help="NAME[,NAME]: run only these")] = None,
    kills: Annotated[
        int | None, typer.Option(min=1, help="worker kills (default 5; 3 short)")
    ] = None,
    backend: Annotated[
        str, typer.Option(help="auto (vLLM, else transformers), vllm-http, transformers")
    ] = "auto",
    model: Annotated[Path | None, typer.Option(help="model folder (default: a tiny one)")] = None,
    header_timeout_s: Annotated[
        float,
        typer.Option(
            min=1, help="how long the read API may keep a connection with unfinished headers"
        ),
    ] = 15.0,
    state_dir: Annotated[Path, typer.Option(help="logs and PID files")] = Path(".aigq/faults"),
) -> None:
    """Faults against the whole loop (worker kills, Redis, model server and broker restarts,
    poison records, wrong clocks, slow clients): events sent and where each arrived."""
    from shell.faults.stage import Options
    from shell.faults.suite import run_suite

    terminate_as_interrupt()
    names = chosen(only)
    wall = time.monotonic()
    if backend not in ("auto", "vllm-http", "transformers"):
        raise typer.BadParameter(f"--backend must be auto, vllm-http or transformers: {backend}")
    state_dir = state_dir.resolve()  # vLLM runs in the model's folder: paths must be absolute
    folder = (model or tiny_model(state_dir / "tiny-model")).resolve()
    server = ModelServer(folder, f"{folder.name}@faults", state_dir, backend)  # type: ignore[arg-type]
    console.print("starting the generation backend ...")
    server.start()
    console.print(f"generating with {server.name}" + (f" at {server.url}" if server.url else ""))
    options = Options(short=short, kills=kills or (3 if short else 5),
                      header_timeout_s=header_timeout_s)  # fmt: skip
    base = LoopConfig(state_dir=state_dir, prefix=f"faults{os.getpid()}",
                      redis=load(RedisSettings), partitions=2, max_tokens=24)  # fmt: skip
    try:
        rows = run_suite(names, base, server, options, console.print)
    finally:
        server.stop()
    form = "short" if short else "full"
    title = f"aigq bench faults ({form}; {server.name}; {time.monotonic() - wall:.0f} s)"
    wide = Console(width=max(console.width, 160))
    wide.print(table(rows, title))
    for line in notes(rows):
        wide.print(line, highlight=False, markup=False)
    wide.print(summary(rows), highlight=False)
    if any(not f.passed and not f.skipped for f in rows):
        raise typer.Exit(1)
