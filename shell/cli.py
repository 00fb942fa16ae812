"""The ``aigq`` command: it assembles each subsystem's commands and adds the whole-loop ones.

Layers (docs/architecture.md, kept by the import-linter contracts in pyproject.toml): the
shared core (:mod:`aigq`) at the bottom, the subsystems above it (cache, streams, generators,
training), each owning its commands (their ``cli.py``), and this shell on top: the root
command, the local dev stack's commands, the demo, the end-to-end and fault benchmarks.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from aigq import __version__
from aigq.cli_kit import console, fails_cleanly
from aigq.dev.stack import DevSettings, DevStack, StackState
from aigq.logging import configure_logging
from aigq.settings import KafkaSettings, RedisSettings, TopicSettings, load
from cache import cli as cache_cli
from generators import cli as generators_cli
from shell import deploy
from shell.bench_x2q import bench_x2q_command
from shell.e2e.cli import bench_e2e_command, demo_command
from shell.faults.cli import bench_faults_command
from streams import cli as streams_cli
from training import cli as training_cli

app = typer.Typer(help="aigq-nearline: fresh personalised hint queries from event streams.")
dev_app = typer.Typer(help="The local development stack: tansu broker, Redis, topics.")
app.add_typer(dev_app, name="dev")
bench_app = typer.Typer(help="Benchmarks that print figures measured side by side in one run.")
app.add_typer(bench_app, name="bench")


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
@fails_cleanly
def dev_up() -> None:
    """Start the broker (and Redis if none answers), create the topics. Safe to rerun."""
    stack = _dev_stack()
    state = stack.up()
    started = ", ".join(state.started) if state.started else "nothing (already running)"
    console.print(f"[green]dev stack up[/]; started: {started}")
    _print_state(stack, state)


@dev_app.command("down")
@fails_cleanly
def dev_down() -> None:
    """Stop what `aigq dev up` started; leave everything else alone."""
    stack = _dev_stack()
    stopped = stack.down()
    console.print(f"stopped: {', '.join(stopped) if stopped else 'nothing of ours was running'}")


@dev_app.command("status")
@fails_cleanly
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


for subsystem in (streams_cli, generators_cli, cache_cli, training_cli):
    subsystem.register(app, bench_app)
app.command("demo")(fails_cleanly(demo_command))
bench_app.command("e2e")(fails_cleanly(bench_e2e_command))
bench_app.command("faults")(fails_cleanly(bench_faults_command))
bench_app.command("x2q")(fails_cleanly(bench_x2q_command))
deploy.register(app)


def main() -> None:
    app()
