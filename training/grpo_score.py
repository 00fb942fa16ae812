"""The RL objective on users nothing trained on: ``aigq train grpo-score MODEL...``.

``aigq eval`` judges a model by its greedy list's hits. An RL run optimises something else: the
expected reward of lists *sampled* from it. This scores that, for any number of models side by
side, on the held-out users' prompts (the split's other side; their daily cuts over their whole
log, a seeded draw of ``--prompts`` of them): ``group`` rollouts per prompt sampled as in
training (:mod:`training.grpo_rollout`), scored with the same rewards
(:mod:`training.grpo_rewards`) and the same CTR model. Columns: the mean summed reward, the
normalised score, the mean query reward of the head slots (1-7: mostly copies of the user's
history in the reference) and of the tail slots (8-10: the reference's new queries), the
sequence reward, and the valid distinct queries per rollout.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from aigq.cli_kit import console
from aigq.registry import Registry
from training.cli_train import (
    DEFAULT_CUT,
    Cut,
    DataDir,
    Heldout,
    RegistryRoot,
    Source,
    Users,
    training_samples,
)
from training.grpo_data import CtrScorer, GrpoPrompt, grpo_prompt
from training.grpo_rewards import Rollout

if TYPE_CHECKING:  # torch comes in with them: imported where the command runs
    from training.grpo import GRPOConfig

HEAD = 7
"""slots 1..7: where a history-first reference copies the user's history"""


def summarise(rollouts: Sequence[Rollout], config: GRPOConfig) -> dict[str, float]:
    """The columns of one model (module doc), over ``rollouts``."""
    n = max(1, len(rollouts))
    head = [sum(r.query[:HEAD]) / HEAD for r in rollouts]
    tail = [sum(r.query[HEAD:]) / max(1, len(r.query) - HEAD) for r in rollouts]
    return {
        "reward": sum(r.total for r in rollouts) / n,
        "score": sum(r.score(config.rewards) for r in rollouts) / n,
        "head_reward": sum(head) / n,
        "tail_reward": sum(tail) / n,
        "sequence_reward": sum(r.sequence for r in rollouts) / n,
        "queries": sum(sum(q is not None for q in r.queries) for r in rollouts) / n,
    }


def score_model(
    spec: str,
    prompts: Sequence[GrpoPrompt],
    config: GRPOConfig,
    registry: Registry,
    ctr: CtrScorer | None,
) -> dict[str, float]:
    """``spec``'s sampled lists on ``prompts``, scored (seeded: each model draws alike)."""
    import torch

    from training.grpo import load_policy, score_batch
    from training.grpo_rollout import Pieces, rollout

    config = replace(config, base=spec)
    model, tokenizer, _ = load_policy(config, registry)
    torch.manual_seed(config.seed)
    pieces, out = Pieces(tokenizer), list[Rollout]()
    step = config.prompts_per_step
    for start in range(0, len(prompts), step):
        chosen = prompts[start : start + step]
        batch = rollout(model, tokenizer, chosen, config.sampling, pieces)
        out += score_batch(batch, chosen, config, ctr)
    return summarise(out, config)


def grpo_score_command(
    models: Annotated[list[str], typer.Argument(help="folders or name[@version]")],
    source: Source = "aol",
    data_dir: DataDir = Path("../shared/data"),
    users: Users = 0,
    cut: Cut = DEFAULT_CUT,
    heldout: Heldout = 0.1,
    ctr: Annotated[str, typer.Option(help="CTR model: name[@version], folder or none")] = (
        "aigq-ctr"
    ),
    prompts: Annotated[int, typer.Option(min=1, help="held-out prompts drawn")] = 400,
    group: Annotated[int, typer.Option(min=2, help="rollouts per prompt")] = 8,
    registry: RegistryRoot = None,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """IL-GRPO's reward on held-out users' prompts, model beside model (sampled lists)."""
    from training.cli_grpo import ctr_scorer
    from training.grpo import GRPOConfig

    reg = Registry(registry)
    scorer, ctr_tag = ctr_scorer(ctr, reg)
    samples, _ = training_samples(source, data_dir, users, cut, heldout, heldout_users=True)
    pool = [p for p in (grpo_prompt(s) for s in samples) if p.references]
    random.Random(seed).shuffle(pool)
    chosen = pool[:prompts]
    console.print(
        f"{len(chosen):,} prompts of {len({p.user.user_id for p in chosen}):,} held-out users, "
        f"{group} sampled rollouts each; CTR reward: {ctr_tag or 'none'}"
    )
    config = GRPOConfig(group=group, seed=seed)
    table = Table(title="IL-GRPO's reward on held-out users (sampled lists, T 1, top-k 100)")
    columns = ("reward", "score", "head_reward", "tail_reward", "sequence_reward", "queries")
    for column in ("model", *columns):
        table.add_column(column, justify="left" if column == "model" else "right")
    rows: dict[str, Any] = {}
    for spec in models:
        rows[spec] = score_model(spec, chosen, config, reg, scorer)
        table.add_row(reg.resolve(spec).tag, *(f"{rows[spec][c]:.4f}" for c in columns))
    console.print(table)
