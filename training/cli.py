"""The training subsystem's commands: ``aigq train ...``, ``aigq eval``, ``aigq trainer``
and ``aigq bench history``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from aigq.cli_kit import console, fails_cleanly
from training.cli_ctr import ctr_command
from training.cli_eval import eval_command
from training.cli_grpo import grpo_command
from training.cli_train import train_app
from training.cli_trainer import trainer_command
from training.grpo_plot import grpo_plot_command
from training.grpo_score import grpo_score_command


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


def register(app: typer.Typer, bench: typer.Typer) -> None:
    """Add this subsystem's commands to the root command (:mod:`shell.cli`)."""
    train_app.command("ctr")(fails_cleanly(ctr_command))
    train_app.command("grpo")(fails_cleanly(grpo_command))
    train_app.command("grpo-plot")(fails_cleanly(grpo_plot_command))
    train_app.command("grpo-score")(fails_cleanly(grpo_score_command))
    app.add_typer(train_app, name="train")
    app.command("eval")(eval_command)
    app.command("trainer")(trainer_command)
    bench.command("history")(fails_cleanly(bench_history))
