"""``aigq train ctr``: the CTR model on a log, evaluated on its later days, published.

The events come from ``--events FILE`` (JSON lines of events, as the trainer's store writes
them: real exposures and hint clicks) or from ``--source aol|synthetic`` with simulated
feedback (:func:`training.ctr_data.simulated_feedback`: the read API's list at each search,
clicks by :mod:`streams.simulator`). The rest is :func:`training.ctr_eval.train_ctr`.
Everything heavy (torch) is imported inside the command, so ``aigq --help`` stays fast.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from aigq.cli_kit import goal_line
from aigq.datasets.base import Malformed, SourceItem
from training import TrainingError
from training.cli_train import parse_day
from training.samples import AnyEvent

console = Console()
HELD_OUT_DAYS = 0.2
"""without --cut: the last 20% of the log's days are the test days"""


def read_events(path: Path) -> Iterator[SourceItem]:
    """The events of a JSON-lines file (:func:`aigq.codec.decode` each line); a line that is
    not an event comes out as :class:`~aigq.datasets.base.Malformed`, blank lines are skipped."""
    from aigq.codec import decode
    from aigq.errors import EventError

    try:
        with path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    yield decode(line)
                except EventError as exc:
                    yield Malformed(f"{path.name}:{number}", line[:512], str(exc))
    except OSError as exc:
        raise TrainingError(f"cannot read events from {path}: {exc}") from exc


def _source_items(source: str, data_dir: Path, users: int) -> Iterator[SourceItem]:
    from aigq.datasets.aol import iter_aol
    from aigq.datasets.synthetic import SyntheticConfig, generate

    if source == "aol":
        return iter_aol(data_dir / "aol", max_users=users or None)
    if source == "synthetic":
        return generate(SyntheticConfig(users=users or 200, days=14))
    raise TrainingError(f"--source must be aol or synthetic, got {source!r}")


def _cut(events_by_user: Mapping[str, Sequence[AnyEvent]], cut: str) -> int:
    from training.ctr_data import default_cut

    if cut:
        return parse_day(cut)
    return default_cut((e.ts for events in events_by_user.values() for e in events), HELD_OUT_DAYS)


def _load(
    source: str, events: Path | None, data_dir: Path, users: int, cut: str, seed: int
) -> tuple[dict[str, list[AnyEvent]], int, dict[str, Any]]:
    """Each user's events (with feedback), the cut, and what the manifest says of the data."""
    from dataclasses import asdict

    from streams.simulator import SimulatorSettings
    from training.ctr_data import FeedbackStats, simulated_feedback
    from training.samples import group_by_user
    from training.served import popular_queries

    items = list(read_events(events) if events else _source_items(source, data_dir, users))
    malformed = sum(isinstance(item, Malformed) for item in items)
    by_user = group_by_user(items)
    if events is not None and users:
        by_user = dict(list(by_user.items())[:users])
    del items
    cut_ms = _cut(by_user, cut)
    data: dict[str, Any] = {"source": str(events) if events else source, "malformed": malformed,
                            "users_asked": users or "all"}  # fmt: skip
    if events is None:
        settings = SimulatorSettings(seed=seed)
        before = [e for evs in by_user.values() for e in evs if e.ts < cut_ms]
        stats = FeedbackStats()
        by_user = simulated_feedback(by_user, settings, popular_queries(before, 50), stats=stats)
        data["simulator"] = settings.model_dump(include={"window_s", "rouge_threshold",
                                                         "position_decay", "seed"})  # fmt: skip
        data["simulated"] = asdict(stats)
    return by_user, cut_ms, data


def ctr_command(
    source: Annotated[str, typer.Option(help="aol or synthetic, with simulated feedback")] = "aol",
    events: Annotated[
        Path | None, typer.Option(help="JSON lines of events with real feedback (not --source)")
    ] = None,
    data_dir: Annotated[Path, typer.Option(help="holds aol/")] = Path("../shared/data"),
    users: Annotated[int, typer.Option(min=0, help="first N users (0: all)")] = 300,
    cut: Annotated[str, typer.Option(help="UTC day the test days start (default: last 20%)")] = "",
    epochs: Annotated[int, typer.Option(min=1, help="passes over the training rows")] = 2,
    seed: Annotated[int, typer.Option(min=0, help="the model's and the simulator's seed")] = 0,
    threads: Annotated[int, typer.Option(min=0, help="torch threads (0: default)")] = 0,
    registry: Annotated[
        Path | None, typer.Option(help="registry root (default $AIGQ_MODEL_REGISTRY)")
    ] = None,
    publish: Annotated[bool, typer.Option(help="publish the model in the registry")] = True,
) -> None:
    """The CTR model (p_ctr): train on exposures before the cut, report AUC and log-loss on
    the later days beside the position-only and query-popularity baselines."""
    from aigq.registry import Registry
    from training.ctr_eval import AUC_MARGIN, goal_met, train_ctr
    from training.ctr_model import CtrConfig

    by_user, cut_ms, data = _load(source, events, data_dir, users, cut, seed)
    config = CtrConfig(epochs=epochs, seed=seed, threads=threads)
    console.print(f"{len(by_user):,} users; test days from {_day(cut_ms)}", highlight=False)
    reg = Registry(registry)
    run = train_ctr(by_user, cut_ms, config, reg, publish, data, lambda m: console.print(m))
    table = Table(title=f"aigq train ctr: held-out days from {_day(cut_ms)} ({source})")
    for column in ("model", "AUC", "log-loss", "examples", "positives"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for row in run.rows:
        table.add_row(row.model, f"{row.auc:.4f}", f"{row.log_loss:.4f}", f"{row.examples:,}",
                      f"{row.positives:,}")  # fmt: skip
    console.print(table)
    ok, best = goal_met(run.rows)
    goal = f">= better baseline + {AUC_MARGIN} = {best + AUC_MARGIN:.4f}"
    console.print(goal_line("CTR model AUC", f"{run.rows[0].auc:.4f}", goal, ok))
    state = "published" if run.published else "trained, not published"
    console.print(f"{state}: [bold]{run.model.tag}[/] at {run.model.path}", highlight=False)


def _day(ms: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d")
