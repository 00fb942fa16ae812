"""``aigq train grpo``: IL-GRPO (or, with ``--plain``, TRL's plain GRPO) on an IL-SFT model.

The prompts are the IL-SFT samples of the same log, cut and split (:func:`training.cli_train.
training_samples`): the training users only, so ``aigq eval`` judges the result on users it
never saw. The CTR reward comes from the registry's CTR model (``aigq train ctr``, or the
trainer's); without one the run stops unless ``--ctr none`` says to train without it.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Annotated, Any

import typer

from aigq.cli_kit import console
from aigq.errors import RegistryError
from training import TrainingError
from training.cli_train import (
    DEFAULT_CUT,
    Cut,
    DataDir,
    Heldout,
    RegistryRoot,
    Source,
    Users,
    reproducing_command,
    training_samples,
)


def grpo_command(
    ctx: typer.Context,
    source: Source = "aol",
    data_dir: DataDir = Path("../shared/data"),
    users: Users = 0,
    cut: Cut = DEFAULT_CUT,
    heldout: Heldout = 0.1,
    base: Annotated[str, typer.Option(help="IL-SFT model: folder or name[@version]")] = (
        "aigq-direct"
    ),
    name: Annotated[str, typer.Option(help="registry name of the result")] = "aigq-direct",
    ctr: Annotated[
        str, typer.Option(help="CTR model for the reward: name[@version], folder, or none")
    ] = "aigq-ctr",
    plain: Annotated[
        bool, typer.Option(help="plain GRPO (TRL's GRPOTrainer, one summed reward)")
    ] = False,
    steps: Annotated[int, typer.Option(min=1, help="rollout steps")] = 100,
    prompts_per_step: Annotated[int, typer.Option(min=1)] = 8,
    group: Annotated[int, typer.Option(min=2, help="G: rollouts per prompt")] = 8,
    lr: Annotated[float, typer.Option(help="learning rate")] = 1e-4,
    lam: Annotated[float, typer.Option(help="weight of the sequence advantage")] = 0.5,
    max_prompts: Annotated[
        int, typer.Option(min=0, help="prompts drawn from the samples (0: all)")
    ] = 0,
    publish: Annotated[bool, typer.Option(help="publish as the name's latest")] = True,
    registry: RegistryRoot = None,
    threads: Annotated[int, typer.Option(min=0, help="torch threads (0: default)")] = 0,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """IL-GRPO: per-slot advantages over G rollouts, rewarded by the CTR model, ROUGE-L to
    the reference slot and length; published in the registry (kind il-grpo / grpo-plain)."""
    from transformers.utils import logging as hf_logging

    from aigq.registry import Registry
    from training.grpo import GRPOConfig
    from training.grpo_data import grpo_prompt

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    config = GRPOConfig(
        base=base, name=name, steps=steps, prompts_per_step=prompts_per_step, group=group,
        lr=lr, lam=lam, seed=seed, threads=threads,
    )  # fmt: skip
    reg = Registry(registry)
    scorer, ctr_tag = ctr_scorer(ctr, reg)
    samples, split = training_samples(source, data_dir, users, cut, heldout)
    prompts = [p for p in (grpo_prompt(s) for s in samples) if p.references]
    random.Random(seed).shuffle(prompts)
    prompts = prompts[: max_prompts or None]
    console.print(
        f"{len(prompts):,} prompts from {len({p.user.user_id for p in prompts}):,} training "
        f"users; {'plain GRPO (TRL)' if plain else 'IL-GRPO'} from {base}, {steps} steps of "
        f"{prompts_per_step} prompts x {group} rollouts; CTR reward: {ctr_tag or 'none'}"
    )
    data: dict[str, Any] = {
        "source": source, "users": users or "all", "cut": cut, "cut_ms": split.cut_ms,
        "heldout_fraction": heldout, "salt": split.salt, "prompts": len(prompts),
        "command": reproducing_command(ctx),
    }  # fmt: skip

    if plain:
        from training.grpo_plain import train_plain

        result = train_plain(prompts, config, reg, data, scorer, ctr_tag, _progress, publish)
    else:
        from training.grpo import train

        result = train(prompts, config, reg, data, scorer, ctr_tag, _progress, publish)
    _summary(result)


def _progress(step: int, total: int, row: dict[str, float]) -> None:
    if step % 10 == 0 or step == total or step == 1:
        console.print(
            f"step {step}/{total}  reward {row['reward']:.3f}  score {row['score']:.3f}  "
            f"entropy {row.get('entropy', float('nan')):.3f}  kept {row['kept']:.2f}  "
            f"{row['seconds']:.1f} s",
            highlight=False,
        )


def _summary(result: Any) -> None:
    m = result.metrics
    console.print(
        f"{'published' if result.published else 'saved (unpublished)'} [bold]"
        f"{result.model.tag}[/] at {result.model.path}\n{int(m['steps'])} steps in "
        f"{m['train_seconds']:.0f} s; reward {m['reward_first']:.3f} (first 10 %) -> "
        f"{m['reward_last']:.3f} (last 10 %); the filter kept {m['kept_share']:.0%} of prompts",
        highlight=False,
    )


def ctr_scorer(spec: str, registry: Any) -> tuple[Any, str]:
    """The CTR model's scorer and tag (``none``: no scorer)."""
    from training.ctr_model import load_ctr

    if spec == "none":
        return None, ""
    path = Path(spec)
    if path.is_dir():
        return load_ctr(path).score, str(path)
    try:
        ref = registry.resolve(spec)
    except RegistryError as exc:
        raise TrainingError(
            f"no CTR model {spec!r} ({exc}); train one (aigq train ctr) or pass --ctr none"
        ) from exc
    return load_ctr(ref.path).score, ref.tag
