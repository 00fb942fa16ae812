"""The RL runs' curves side by side: ``aigq train grpo-plot RUN... --out curves.png``.

Each run is a model folder written by ``aigq train grpo`` (IL-GRPO, or ``--plain``): its
``grpo_log.json`` holds one row per rollout step. The plot shows, per run, the mean summed
reward of the step's rollouts (the same number for both methods: what plain GRPO optimises),
the mean normalised score (what the difficulty filter reads), the policy's mean token entropy
and the share of prompts the difficulty filter kept, each smoothed over ``window`` steps.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer

from aigq.cli_kit import console
from training import TrainingError

PANELS = (
    ("reward", "summed reward (slots + sequence)"),
    ("score", "normalised slot reward (0..1)"),
    ("entropy", "mean token entropy (nats)"),
    ("kept", "prompts kept by the difficulty filter"),
)


def read_curve(folder: Path) -> list[dict[str, float]]:
    """A run's curve (one row per rollout step)."""
    from training.grpo import LOG_FILE  # torch: not for the root command's import

    path = folder / LOG_FILE
    try:
        rows = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise TrainingError(f"no readable {LOG_FILE} in {folder}: {exc}") from exc
    if not isinstance(rows, list):
        raise TrainingError(f"{path}: not a list of steps")
    return rows


def smooth(values: Sequence[float], window: int) -> list[float]:
    """The trailing mean over ``window`` values (fewer at the start)."""
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_curves(runs: dict[str, list[dict[str, float]]], path: Path, window: int = 10) -> None:
    """The four panels of :data:`PANELS`, one line per run. Agg backend: no display needed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(PANELS), figsize=(4.2 * len(PANELS), 3.8))
    for i, (name, rows) in enumerate(runs.items()):
        for axis, (key, _) in zip(axes, PANELS, strict=True):
            points = [(row["step"], row[key]) for row in rows if key in row]
            if points:
                steps, values = zip(*points, strict=True)
                axis.plot(steps, smooth(values, window), color=f"C{i % 10}", label=name)
    for axis, (_, title) in zip(axes, PANELS, strict=True):
        axis.set_title(title, fontsize="medium")
        axis.set_xlabel("rollout step")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    axes[-1].set_ylim(0.0, 1.05)  # a share
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def grpo_plot_command(
    runs: Annotated[list[Path], typer.Argument(help="model folders of aigq train grpo runs")],
    out: Annotated[Path, typer.Option(help="the PNG to write")] = Path("grpo_curves.png"),
    window: Annotated[int, typer.Option(min=1, help="steps each point is averaged over")] = 10,
) -> None:
    """Plot RL runs' reward, entropy and difficulty-filter curves side by side."""
    from training.grpo import RUN_FILE

    curves: dict[str, list[dict[str, float]]] = {}
    for folder in runs:
        manifest = folder / RUN_FILE
        kind = json.loads(manifest.read_text()).get("kind", "") if manifest.is_file() else ""
        where = f"{folder.parent.name}/{folder.name}"
        curves[f"{kind} ({where})" if kind else where] = read_curve(folder)
    plot_curves(curves, out, window)
    console.print(f"wrote {out}")
