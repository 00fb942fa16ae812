"""Settings of ``aigq trainer`` (``AIGQ_TRAINER_*``): the store, the schedule, the gates."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class TrainerSettings(BaseSettings):
    """One object for the trainer process; a cycle takes what it needs."""

    model_config = SettingsConfigDict(env_prefix="AIGQ_TRAINER_", frozen=True, extra="forbid")

    state_dir: Path = Field(
        Path(".aigq/trainer"), description="the feedback store and the cycle reports"
    )
    store_max_bytes: int = Field(
        1 << 30, ge=1 << 20, description="feedback kept on disk; the oldest segments go first"
    )
    segment_bytes: int = Field(16 << 20, ge=1024, description="one store segment's size")
    group_id: str = Field("aigq-trainer", description="consumer group of the feedback topics")
    every_s: float = Field(
        86_400.0,
        gt=0,
        le=30 * 86_400,
        description="a cycle this long after the last one started (86400: daily)",
    )
    min_new_events: int = Field(
        1, ge=0, description="a scheduled cycle is skipped with fewer new records stored"
    )
    generator: str = Field("aigq-direct", description="registry name of the generation model")
    ctr: str = Field("aigq-ctr", description="registry name of the CTR model")
    heldout_fraction: float = Field(
        0.1, gt=0, lt=1, description="users held out of training, by hash, to judge candidates"
    )
    salt: str = Field("aigq-trainer-1", description="which users are held out")
    ctr_test_fraction: float = Field(
        0.2, gt=0, lt=1, description="the newest share of the feedback's time span the CTR "
        "candidate is judged on (trained on what came before)",
    )  # fmt: skip
    min_exposures: int = Field(
        200, ge=1, description="fewer exposures: the CTR model is not retrained"
    )
    sft_steps: int = Field(60, ge=1, le=100_000, description="IL-SFT steps per cycle")
    sft_lr: float = Field(5e-4, gt=0, le=1, description="its peak learning rate")
    sft_batch_size: int = Field(16, ge=1, le=1024, description="its batch size")
    grpo_steps: int = Field(
        20, ge=0, le=100_000, description="IL-GRPO rollout steps per cycle, after IL-SFT (0: off)"
    )
    grpo_prompts_per_step: int = Field(8, ge=1, le=1024, description="its prompts per step")
    grpo_group: int = Field(8, ge=2, le=64, description="its rollouts per prompt (G)")
    grpo_lr: float = Field(1e-4, gt=0, le=1, description="its learning rate")
    min_samples: int = Field(
        20, ge=2, description="fewer Direct samples: the generator is not updated"
    )
    eval_users: int = Field(
        120, ge=1, le=100_000, description="held-out users both models are judged on, at most"
    )
    eval_max_tokens: int = Field(48, ge=8, le=4096, description="tokens per list when judging")
    tolerance: float = Field(
        0.0,
        ge=0,
        le=1,
        description="a candidate is published when its score >= the current one's - this "
        "(hit@10 for the generator, AUC for the CTR model)",
    )
    threads: int = Field(0, ge=0, le=256, description="torch threads (0: torch's default)")
    metrics_port: int = Field(0, ge=0, le=65535, description="Prometheus /metrics (0: off)")
    metrics_bind: str = Field("127.0.0.1", description="address of the metrics endpoint")
