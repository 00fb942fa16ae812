"""``aigq train grpo``: IL-GRPO (or, with ``--plain``, TRL's plain GRPO) on an IL-SFT model.

The prompts are the IL-SFT samples of the same log, cut and split (:func:`training.cli_train.
training_samples`): the training users only, so ``aigq eval`` judges the result on users it
never saw. The CTR reward comes from the registry's CTR model (``aigq train ctr``, or the
trainer's); without one the run stops unless ``--ctr none`` says to train without it.

``--samples think`` trains AIGQ-Think instead: the prompts are the training users' Think
samples (user-days), each with its reference Think target
(:func:`training.grpo_data.think_grpo_prompt`), from ``aigq-think`` into ``aigq-think`` unless
``--base``/``--name`` say otherwise.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

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

if TYPE_CHECKING:  # torch-free at import: the CLI loads these where the command runs
    from training.grpo_data import GrpoPrompt
    from training.split import SplitConfig

SampleKind = Literal["direct", "think"]


def grpo_command(
    ctx: typer.Context,
    source: Source = "aol",
    data_dir: DataDir = Path("../shared/data"),
    users: Users = 0,
    cut: Cut = DEFAULT_CUT,
    heldout: Heldout = 0.1,
    samples_kind: Annotated[
        SampleKind,
        typer.Option("--samples", help="direct: daily cuts; think: user-days, Think targets"),
    ] = "direct",
    base: Annotated[
        str, typer.Option(help="IL-SFT model: folder or name[@version] (default aigq-<samples>)")
    ] = "",
    name: Annotated[
        str, typer.Option(help="registry name of the result (default aigq-<samples>)")
    ] = "",
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
    max_new_tokens: Annotated[
        int,
        typer.Option(min=0, help="tokens per rollout (0: 64; think: IL-SFT's longest target)"),
    ] = 0,
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
    from training.sft import SFTConfig

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    base, name = base or f"aigq-{samples_kind}", name or f"aigq-{samples_kind}"
    if not max_new_tokens:  # a Think output (rationale, trigger lines, queries) runs longer:
        # room for the longest target IL-SFT taught, so the last query slots can be written
        think = samples_kind == "think"
        max_new_tokens = SFTConfig().max_target_tokens if think else GRPOConfig.max_new_tokens
    config = GRPOConfig(
        base=base, name=name, steps=steps, prompts_per_step=prompts_per_step, group=group,
        lr=lr, lam=lam, seed=seed, threads=threads, max_new_tokens=max_new_tokens,
    )  # fmt: skip
    reg = Registry(registry)
    scorer, ctr_tag = ctr_scorer(ctr, reg)
    prompts, samples, split = rl_prompts(source, data_dir, users, cut, heldout, samples_kind,
                                         config.rewards.k)  # fmt: skip
    no_reference = samples - len(prompts)
    random.Random(seed).shuffle(prompts)
    prompts = prompts[: max_prompts or None]
    console.print(
        f"{len(prompts):,} {samples_kind} prompts from "
        f"{len({p.user.user_id for p in prompts}):,} training users ({no_reference:,} of "
        f"{samples:,} samples dropped: no reference query); "
        f"{'plain GRPO (TRL)' if plain else 'IL-GRPO'} from {base}, {steps} steps of "
        f"{prompts_per_step} prompts x {group} rollouts; CTR reward: {ctr_tag or 'none'}"
    )
    data: dict[str, Any] = {
        "source": source, "users": users or "all", "cut": cut, "cut_ms": split.cut_ms,
        "heldout_fraction": heldout, "salt": split.salt, "sample_kind": samples_kind,
        "samples": samples, "dropped_no_reference": no_reference, "prompts": len(prompts),
        "command": reproducing_command(ctx),
    }  # fmt: skip

    if plain:
        from training.grpo_plain import train_plain

        result = train_plain(prompts, config, reg, data, scorer, ctr_tag, _progress, publish)
    else:
        from training.grpo import train

        result = train(prompts, config, reg, data, scorer, ctr_tag, _progress, publish)
    _summary(result)


def rl_prompts(
    source: str,
    data_dir: Path,
    users: int,
    cut: str,
    heldout: float,
    samples_kind: SampleKind,
    k: int = 10,
) -> tuple[list[GrpoPrompt], int, SplitConfig]:
    """The training users' RL prompts of ``samples_kind`` with at least one reference query,
    how many samples they came from (the rest are dropped: no reference to match), and the
    split. Direct: the IL-SFT proxy samples (daily cuts); Think: the Think samples (user-days)
    with their reference Think targets."""
    from training.grpo_data import grpo_prompt, think_grpo_prompt

    if samples_kind == "think":
        samples, split = training_samples(source, data_dir, users, cut, heldout, "think")
        built = [think_grpo_prompt(s, k) for s in samples]
    else:
        samples, split = training_samples(source, data_dir, users, cut, heldout)
        built = [grpo_prompt(s, k) for s in samples]
    return [p for p in built if p.references], len(samples), split


def _progress(step: int, total: int, row: dict[str, float]) -> None:
    if step % 10 == 0 or step == total or step == 1:
        trigger = f"  trigger {row['trigger_reward']:.3f}" if "trigger_reward" in row else ""
        console.print(
            f"step {step}/{total}  reward {row['reward']:.3f}  score {row['score']:.3f}"
            f"{trigger}  entropy {row.get('entropy', float('nan')):.3f}  "
            f"kept {row['kept']:.2f}  {row['seconds']:.1f} s",
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
