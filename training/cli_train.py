"""``aigq train sft``: IL-SFT on a log, published in the model registry.

The samples are built from the log exactly as ``aigq eval`` builds its held-out test set
(same cut, held-out fraction and salt, recorded in the manifest), so training never sees a
held-out user nor anything at or after the cut.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from aigq.datasets.base import SourceItem
from training import TargetOrder, TrainingError
from training.cli_think import (
    TEACHER_MODEL,
    SinglesMax,
    TeacherApiOption,
    TeacherCache,
    TeacherConcurrency,
    TeacherMax,
    TeacherModel,
    TeacherUrl,
    teacher_config,
    think_pairs,
)
from training.tiny import TinyConfig, TokenizerKind

if TYPE_CHECKING:
    from training.samples import Sample
    from training.split import SplitConfig

train_app = typer.Typer(help="Training: IL-SFT of the hint-query model.")
console = Console()

DEFAULT_CUT = "2006-05-15"  # AOL: training before it, evaluation labels after it

# The options every command that reads a log for training takes (sft, grpo, grpo-score).
Source = Annotated[str, typer.Option(help="aol, bestbuy or synthetic")]
DataDir = Annotated[Path, typer.Option(help="where the logs are")]
Users = Annotated[int, typer.Option(min=0, help="first N users of the log (0: all)")]
Cut = Annotated[str, typer.Option(help="UTC day: train before it")]
Heldout = Annotated[float, typer.Option(help="share of users held out for eval")]
RegistryRoot = Annotated[
    Path | None, typer.Option(help="registry root (default $AIGQ_MODEL_REGISTRY)")
]


def parse_day(text: str) -> int:
    """``YYYY-MM-DD`` (UTC midnight) or an ISO time -> UTC epoch ms."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError as exc:
        raise TrainingError(f"not a date: {text!r} (want YYYY-MM-DD)") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


@train_app.command("sft")
def sft(
    ctx: typer.Context,
    source: Source = "aol",
    data_dir: DataDir = Path("../shared/data"),
    users: Users = 0,
    cut: Cut = DEFAULT_CUT,
    heldout: Heldout = 0.1,
    samples_kind: Annotated[
        str,
        typer.Option(
            "--samples", help="proxy: daily cuts, label windows; think: user-days, with a teacher"
        ),
    ] = "proxy",
    every_days: Annotated[int, typer.Option(min=1, help="proxy: days between cuts")] = 1,
    window_days: Annotated[
        int, typer.Option(min=1, help="proxy: label window after each cut (days)")
    ] = 1,
    target_order: Annotated[
        TargetOrder,
        typer.Option(help="proxy: copied history in the prompt's order, or recurring first"),
    ] = "shown",
    base: Annotated[str, typer.Option(help='"tiny", a model folder or name@version')] = "tiny",
    name: Annotated[str, typer.Option(help="registry name of the result")] = "aigq-direct",
    epochs: Annotated[float, typer.Option(help="passes over the samples")] = 1.0,
    max_steps: Annotated[int, typer.Option(min=0, help="stop after N steps (0: epochs)")] = 0,
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    lr: Annotated[float, typer.Option(help="peak learning rate")] = 3e-3,
    lora: Annotated[bool, typer.Option(help="LoRA adapters (pretrained bases)")] = False,
    resume: Annotated[str, typer.Option(help="name@version of an unfinished run")] = "",
    registry: RegistryRoot = None,
    threads: Annotated[int, typer.Option(min=0, help="torch threads (0: default)")] = 0,
    tokenizer: Annotated[
        TokenizerKind, typer.Option(help="--base tiny: word (whole words only) or bpe")
    ] = "word",
    teacher_url: TeacherUrl = "",
    teacher_model: TeacherModel = TEACHER_MODEL,
    teacher_api: TeacherApiOption = "chat",
    teacher_max: TeacherMax = 0,
    teacher_concurrency: TeacherConcurrency = 4,
    teacher_cache: TeacherCache = None,
    singles_max: SinglesMax = 0,
) -> None:
    """IL-SFT: train on the log's samples and publish the model in the registry."""
    from transformers.utils import logging as hf_logging

    from aigq.registry import Registry
    from training.sft import Pair, SFTConfig, train

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # no shard bars

    config = SFTConfig(
        base=base, name=name, epochs=epochs, max_steps=max_steps, batch_size=batch_size,
        lr=lr, lora=lora, threads=threads, tiny=TinyConfig(tokenizer=tokenizer),
    )  # fmt: skip
    teacher = (
        teacher_config(teacher_url, teacher_model, teacher_api, teacher_concurrency)
        if samples_kind == "think"
        else None
    )
    reg = Registry(registry)
    resume_ref = reg.unfinished(resume) if resume else None
    samples, split = training_samples(
        source, data_dir, users, cut, heldout, samples_kind, every_days, window_days
    )
    taught: dict[str, Any] | None = None
    if teacher is not None:  # Think: a teacher's rationale, then (trigger set -> queries)
        pairs, taught = think_pairs(
            samples, teacher, config.k, teacher_max, teacher_cache, singles_max
        )
    else:
        pairs = [Pair(s.prompt(config.k), s.target(config.k, target_order)) for s in samples]
    pairs = [p for p in pairs if p.target]
    console.print(
        f"{len(pairs):,} training pairs from {len(samples):,} samples of "
        f"{len({s.context.user_id for s in samples}):,} users (the held-out ones are left "
        "for aigq eval)"
    )
    data: dict[str, Any] = {
        "source": source, "users": users or "all", "cut": cut, "cut_ms": split.cut_ms,
        "heldout_fraction": heldout, "salt": split.salt, "train_pairs": len(pairs),
        "sample_kind": samples_kind, "every_days": every_days, "window_days": window_days,
        "target_order": target_order,
        "command": reproducing_command(ctx),
    }  # fmt: skip
    if taught is not None:
        data["teacher"] = taught

    with Progress(*_COLUMNS, console=console) as bar:
        progress = _bar_progress(bar)
        result = train(pairs, config, reg, data, resume=resume_ref, progress=progress)
    m = result.metrics
    console.print(
        f"published [bold]{result.model.tag}[/] at {result.model.path}\n"
        f"{m['params'] / 1e6:.2f}M parameters, {int(m['steps'])} steps in "
        f"{m['train_seconds']:.0f} s, {m['tokens_per_s']:,.0f} tokens/s, "
        f"train loss {m['train_loss']:.3f}, val loss {m['val_loss']:.3f}",
        highlight=False,
    )


_COLUMNS = (
    TextColumn("[bold]sft"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
    TextColumn("{task.fields[stats]}"),
)  # fmt: skip


def _bar_progress(bar: Progress) -> Callable[[int, int, dict[str, float]], None]:
    """IL-SFT's progress callback on ``bar`` (and a plain line every 100 steps off a
    terminal: logs, CI)."""
    task = bar.add_task("sft", total=1, stats="")

    def progress(step: int, total: int, stats: dict[str, float]) -> None:
        line = (
            f"loss {stats['loss']:.3f}  val {stats['val_loss']:.3f}  "
            f"lr {stats['lr']:.1e}  {stats['tokens_per_s']:,.0f} tok/s"
        )
        bar.update(task, completed=step, total=total, stats=line)
        if not console.is_terminal and (step % 100 == 0 or step == total):
            console.print(f"step {step}/{total}  {line}", highlight=False)

    return progress


def training_samples(
    source: str,
    data_dir: Path,
    users: int,
    cut: str,
    heldout: float,
    samples_kind: str = "proxy",
    every_days: int = 1,
    window_days: int = 1,
    heldout_users: bool = False,
) -> tuple[list[Sample], SplitConfig]:
    """The training users' samples of a log, before ``cut`` (the held-out users are
    ``aigq eval``'s), and the split that drew the line: IL-SFT's and IL-GRPO's data. With
    ``heldout_users``, the same kind of samples of the held-out users instead, over their
    whole log (``aigq train grpo-score``: the RL objective on users nothing trained on)."""
    from aigq.datasets.aol import iter_aol
    from aigq.datasets.sources import open_source
    from training.samples import DAY_MS, SampleConfig, rolling_proxy_samples, think_samples
    from training.split import SplitConfig, split_events, split_samples

    # A one-day label window: the samples are shaped like the last-day evaluation (the day a
    # user comes back), and each cut's target is about that day, not a week's mix.
    sample_config = SampleConfig(window_ms=window_days * DAY_MS)
    split = SplitConfig(cut_ms=parse_day(cut), heldout_fraction=heldout, samples=sample_config)
    items = (
        iter_aol(data_dir / "aol", max_users=users or None)
        if source == "aol"
        else open_source(source, data_dir=data_dir)
    )
    console.print(f"building samples from {source} (cut {cut}, {heldout:.0%} held out) ...")
    if samples_kind not in ("proxy", "think"):
        raise TrainingError(f"--samples must be proxy or think, got {samples_kind!r}")

    def rolling(items: Iterable[SourceItem], config: SampleConfig) -> list[Sample]:
        return rolling_proxy_samples(items, config, every_ms=every_days * DAY_MS)

    builder = rolling if samples_kind == "proxy" else think_samples
    if heldout_users:
        return builder(split_events(items, split).heldout, sample_config), split
    return split_samples(items, split, train=builder).train, split


def reproducing_command(ctx: typer.Context) -> str:
    """``aigq train sft`` (or the command ``ctx`` is: ``grpo``) with the options this run was
    given on its command line, except ``--registry`` (where a model is published does not
    change it): what a manifest records, so one command remakes the model. Read from click's
    parsed parameters (not ``sys.argv``), so it is the same however the command was invoked.
    (typer carries its own copy of click, so its classes are compared by name.)"""
    parts = ["aigq", "train", ctx.info_name or "sft"]
    for param in ctx.command.params:
        name = param.name
        if name is None or name == "registry" or param.param_type_name != "option":
            continue
        source = ctx.get_parameter_source(name)
        if source is None or source.name != "COMMANDLINE":
            continue
        value = ctx.params[name]
        if getattr(param, "is_flag", False) and param.secondary_opts:
            parts.append(param.opts[0] if value else param.secondary_opts[0])
        else:
            parts += [param.opts[0], f"{value:g}" if isinstance(value, float) else str(value)]
    return shlex.join(parts)
