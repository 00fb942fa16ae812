"""``aigq demo --learn``: the learning loop on top of the demo (:mod:`shell.e2e.learn`)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from aigq.cli_kit import goal_line
from aigq.registry import MANIFEST, Registry
from shell.e2e.learn import LearnResult, run_learning
from shell.e2e.run import MODEL_NAME, Slice
from shell.e2e.stack import LoopConfig, ModelServer


def seed_registry(root: Path, model: Path) -> str:
    """The run's own registry, holding ``model`` as its first published ``aigq-direct``
    (the generator starts on it, the trainer fine-tunes from it): its ``name@version``."""
    shutil.rmtree(root, ignore_errors=True)
    registry = Registry(root, shipped=None)
    ref = registry.reserve(MODEL_NAME)
    shutil.copytree(model, ref.path, dirs_exist_ok=True, ignore=shutil.ignore_patterns(MANIFEST))
    try:
        manifest = json.loads((model / MANIFEST).read_text())
    except (OSError, ValueError):
        manifest = {}
    manifest = {k: v for k, v in manifest.items() if k not in ("name", "version")}
    registry.publish(ref, {**manifest, "seeded_from": str(model)})
    return ref.tag


def demo_learn(
    config: LoopConfig, model: ModelServer, data: Slice, rate: float, console: Console
) -> LearnResult:
    """Run the learning demo and print what it measured."""
    registry = config.state_dir / "registry"
    shutil.rmtree(config.state_dir / "trainer", ignore_errors=True)  # an earlier run's store
    model.model_version = seed_registry(registry, model.model)
    model.model = registry / MODEL_NAME / model.model_version.split("@")[1]
    console.print(f"learning loop: models in {registry}, starting on {model.model_version}")
    started = time.monotonic()

    def say(line: str) -> None:  # the trainer's own lines and table, as it printed them
        console.print(line, soft_wrap=True, markup=False, highlight=False)

    result = run_learning(config, model, data, rate, say=say)
    table = Table(title="served CTR per model version (simulated clicks, docs/simulator.md)")
    for column in ("model version of the u2q run", "exposures", "clicked", "CTR"):
        table.add_column(column, justify="left" if column.startswith("model") else "right")
    for row in result.ctr:
        table.add_row(row.version, f"{row.exposures:,}", f"{row.clicked:,}", f"{row.ctr:.4f}")
    console.print(table)
    console.print(
        "not an A/B test: a version's exposures are the moments its runs were served (a new "
        "version's runs are the ones regenerated after the reload, at interest changes), so "
        "the rows differ in users and moments as well as in the model; the trainer's gate "
        "is the like-for-like comparison",
        highlight=False,
    )
    written = ", ".join(f"{v}: {n:,}" for v, n in sorted(result.written_by_version.items()))
    console.print(f"lists written per model version: {written}", highlight=False)
    reload = "-" if result.reload_s is None else f"{result.reload_s:.1f} s"
    console.print(
        f"trainer cycle {result.cycle_s:.0f} s; announced: {', '.join(result.announced) or '-'}"
        f"; from the cycle's end to the first list of the new version: {reload}",
        highlight=False,
    )
    full = bool(result.announced) and result.reload_s is not None
    console.print(
        goal_line(
            "one full cycle (feedback, train, publish, reload) in the demo",
            "yes" if full else "no",
            "yes",
            full,
        ),
        highlight=False,
    )
    answers = ", ".join(f"{status}: {n:,}" for status, n in sorted(result.probe_status.items()))
    console.print(
        f"read API answers to the probes: {answers} (a 503 is a read over the "
        f"{config.hints_timeout_ms} ms deadline on this loaded machine)",
        highlight=False,
    )
    console.print(f"learning demo: {time.monotonic() - started:.0f} s", highlight=False)
    return result
