"""``aigq eval``: offline evaluation on AOL users held out from training.

Registered by :mod:`training.cli`; everything heavy (torch, transformers, sentence-transformers,
matplotlib) is imported inside the command, so ``aigq --help`` stays fast. The split options
default to ``aigq train sft``'s (the same :data:`~training.cli_train.DEFAULT_CUT`, fraction and
salt), so the held-out users are the ones the trained model never saw.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from aigq.errors import AigqError
from training.cli_train import DEFAULT_CUT, parse_day
from training.predictors import PredictorConfig

if TYPE_CHECKING:
    from training.evaluate import EvalRun

console = Console()
err_console = Console(stderr=True)


def _default_out() -> Path:
    return Path("eval-out") / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def eval_command(
    data_dir: Annotated[Path, typer.Option(help="holds aol/")] = Path("../shared/data"),
    users: Annotated[int, typer.Option(min=0, help="first N users of the log (0: all)")] = 0,
    protocol: Annotated[
        str, typer.Option(help="last-day (each held-out user's last search day) | window")
    ] = "last-day",
    heldout_data: Annotated[
        Path | None, typer.Option(help="last-day: every user of DIR/aol is held out")
    ] = None,
    cut: Annotated[
        str, typer.Option(help="UTC day: training data before it (window: labels after)")
    ] = DEFAULT_CUT,
    heldout: Annotated[float, typer.Option(help="share of users held out")] = 0.1,
    window_days: Annotated[int, typer.Option(min=1, help="label window after the cut")] = 7,
    salt: Annotated[str | None, typer.Option(help="split salt (default: training's)")] = None,
    model: Annotated[
        list[str] | None, typer.Option(help="more trained models: folder or name@version")
    ] = None,
    default_model: Annotated[
        bool, typer.Option(help="the registry's latest aigq-direct (skipped if none)")
    ] = True,
    zero_shot: Annotated[bool, typer.Option(help="zero-shot SmolLM2-135M baseline")] = True,
    prompt: Annotated[str, typer.Option(help="trained models' prompt: compressed|verbose")] = (
        "compressed"
    ),
    batch_size: Annotated[int, typer.Option(min=1, help="LLM prompts per batch")] = 16,
    max_tokens: Annotated[int, typer.Option(min=8, help="LLM tokens per list")] = 160,
    n: Annotated[
        int, typer.Option(min=1, help="trained models: lists sampled per user, merged by rank")
    ] = 1,
    temperature: Annotated[
        float, typer.Option(min=0.0, help="trained models: 0 greedy, > 0 sampling")
    ] = 0.0,
    semantic: Annotated[bool, typer.Option(help="MiniLM semantic similarity")] = True,
    threads: Annotated[int, typer.Option(min=0, help="torch threads (0: default)")] = 0,
    registry: Annotated[
        Path | None, typer.Option(help="registry root (default $AIGQ_MODEL_REGISTRY)")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="report folder (default ./eval-out/<UTC time>/)")
    ] = None,
    x2q: Annotated[
        str, typer.Option(help="last-day: also serve with an x2q index built by this Think model")
    ] = "",
    x2q_days: Annotated[int, typer.Option(min=1, help="the x2q index's window (days)")] = 7,
) -> None:
    """Offline evaluation on held-out AOL users: baselines, zero-shot SmolLM2, trained model
    (and, last-day, the read API's served list).

    Writes results.json, results.md and hr_at_k.png into --out, and prints the table.
    """
    from training.evaluate import PROTOCOLS, EvalRun
    from training.samples import DAY_MS, SampleConfig
    from training.split import DEFAULT_SALT, SplitConfig

    if prompt not in ("compressed", "verbose"):
        raise typer.BadParameter(f"--prompt must be compressed or verbose, not {prompt!r}")
    if protocol not in PROTOCOLS:
        raise typer.BadParameter(f"--protocol must be one of {', '.join(PROTOCOLS)}")
    try:
        split = SplitConfig(
            cut_ms=parse_day(cut), heldout_fraction=heldout, salt=salt or DEFAULT_SALT,
            samples=SampleConfig(window_ms=window_days * DAY_MS),
        )  # fmt: skip
        run = EvalRun(
            aol=_aol(data_dir), split=split, users=users, models=tuple(model or ()),
            default_model=default_model, zero_shot=zero_shot, compressed=prompt == "compressed",
            predictor=PredictorConfig(batch_size=batch_size, max_tokens=max_tokens, n=n,
                                      temperature=temperature),
            semantic=semantic, registry=registry, threads=threads, protocol=protocol,
            heldout_data=_heldout(heldout_data, protocol), x2q_model=x2q, x2q_days=x2q_days,
        )  # fmt: skip
        _eval(run, out)
    except AigqError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(1) from exc


def _aol(data_dir: Path) -> Path:
    aol = data_dir / "aol"
    if not aol.exists():
        raise typer.BadParameter(f"no AOL log at {aol}")
    return aol


def _heldout(heldout_data: Path | None, protocol: str) -> Path | None:
    """``--heldout-data``'s AOL folder (last-day only)."""
    if heldout_data is None:
        return None
    if protocol != "last-day":
        raise typer.BadParameter("--heldout-data needs --protocol last-day")
    return _aol(heldout_data)


def _eval(run: EvalRun, out: Path | None) -> None:
    """Run ``run``, write its report into ``out`` and print the table and the notes."""
    from training.evaluate import run_eval
    from training.report import comparison_line, markdown_table, write_report

    results = run_eval(run, log=lambda line: console.print(line, highlight=False))
    files = write_report(results, out or _default_out())

    console.print()
    console.print(markdown_table(results), highlight=False, soft_wrap=True)
    for p in results.predictors:
        console.print(
            f"{p.name}: fit {p.fit_seconds:.1f} s, predict {p.predict_seconds:.1f} s "
            f"({p.contexts_per_s:,.2f} lists/s, {p.queries_per_s:,.1f} queries/s)"
            + (
                f"; validation: {p.validation['malformed_lists']} of {p.validation['lists']} "
                "lists malformed (empty)"
                if p.validation
                else ""
            ),
            highlight=False,
        )
    for note in results.notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
    console.print(f"report: {files.json}, {files.markdown}, {files.plot}", highlight=False)
    console.print(comparison_line(results), highlight=False)
