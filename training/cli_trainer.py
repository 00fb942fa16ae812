"""``aigq trainer``: the learning loop's process (:mod:`training.trainer`)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from aigq.cli_kit import console
from aigq.errors import AigqError


def trainer_command(
    once: Annotated[
        bool, typer.Option(help="catch up with the topics, run one cycle, exit (CronJobs)")
    ] = False,
) -> None:
    """Consume hint feedback and behaviour into the feedback store; on a schedule retrain the
    CTR model, update the generation model, judge both and publish what is not worse.

    Configured by AIGQ_TRAINER_* (store, schedule, gates), AIGQ_KAFKA_*, AIGQ_TOPICS_* and
    AIGQ_MODEL_REGISTRY; stops on SIGTERM/SIGINT (a cycle in progress finishes first).
    """
    import asyncio
    import signal

    from transformers.utils import logging as hf_logging

    from aigq.settings import KafkaSettings, TopicSettings, load
    from training.trainer import Trainer
    from training.trainer_settings import TrainerSettings

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # no loading bars
    settings = load(TrainerSettings)
    trainer = Trainer(
        load(KafkaSettings),
        load(TopicSettings),
        settings,
        say=lambda line: console.print(line, highlight=False),
    )
    if settings.metrics_port:
        trainer.metrics.serve(settings.metrics_port, settings.metrics_bind)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, trainer.stop)
        report = await trainer.run(once=once)
        if report is not None:
            console.print(cycle_table(report.as_dict()))

    try:
        asyncio.run(run())
    except AigqError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(1) from exc


def cycle_table(report: dict[str, object]) -> Table:
    """A cycle report as a table: what each stage took and decided."""
    table = Table(title="aigq trainer: one cycle")
    table.add_column("what")
    table.add_column("figure")
    table.add_row(
        "feedback read",
        f"{report['records']:,} records, {report['users']:,} users, "
        f"{report['exposures']:,} exposures, {report['clicks']:,} hint clicks",
    )
    seconds = report.get("seconds")
    if isinstance(seconds, dict):
        for stage, took in seconds.items():
            table.add_row(f"  {stage}", f"{took:.1f} s")
    for part in ("ctr", "generator"):
        detail = report.get(part)
        if isinstance(detail, dict):
            table.add_row(part, str(detail.get("decision", "")))
    announced = report.get("announced")
    table.add_row("announced", ", ".join(map(str, announced or [])) or "nothing")  # type: ignore[call-overload]
    return table
