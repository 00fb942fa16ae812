"""Settings of the streaming worker (``AIGQ_STREAM_*``): the app, its state, the trigger policy."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from aigq.events import MAX_RECENT_BEHAVIOURS
from cache.budget import BudgetPolicy
from cache.history import MAX_HISTORY
from streams.session import SessionConfig
from streams.triggers import CostGovernor, TriggerPolicy

TABLE_NAME = "sessions"  # the worker's table; its changelog is <app_id>-sessions-changelog


class StreamSettings(BaseSettings):
    """One object for the worker; the pure parts get their own small configs from it."""

    model_config = SettingsConfigDict(env_prefix="AIGQ_STREAM_", frozen=True, extra="forbid")

    app_id: str = Field("aigq-sessions", description="consumer group and changelog topic prefix")
    store: Literal["auto", "memory", "rocksdb"] = Field(
        "auto", description="table store; auto and memory: in memory (rocksdb is refused)"
    )
    data_dir: str = Field(".aigq/worker", description="where Faust keeps RocksDB tables")
    flush_interval_s: float = Field(1.0, gt=0, le=60, description="state writes per user at most")
    max_hot_sessions: int = Field(200_000, ge=1_000, description="sessions kept in memory")
    max_event_bytes: int = Field(64 * 1024, ge=256, description="larger records: dead letters")
    session_timeout_s: float = Field(30.0, ge=1, description="consumer group session timeout")
    recent_triggers: bool = Field(
        True, description="keep each user's recent queries/items/categories in Redis (read API)"
    )
    history: bool = Field(
        True, description="keep each user's top searched queries in Redis (read API)"
    )
    history_ttl_s: int = Field(
        30 * 86_400, ge=1, description="a user's history in Redis expires this long after a search"
    )
    gap_seeks: int = Field(
        3,
        ge=0,
        description="seeks back over a skipped source offset before the broker is asked whether "
        "it is a real gap (0: the gap guard is off)",
    )
    changelog_batch_bytes: int = Field(
        512 * 1024, ge=16, description="producer batch size of state writes (16: one per batch)"
    )
    generate: bool = Field(True, description="emit regeneration requests (off: rebuild only)")
    max_future_s: float = Field(
        300.0,
        ge=0,
        le=86_400,
        description="event times further ahead of their record's broker time are clamped to it",
    )

    max_recent: int = Field(
        20,
        ge=1,
        le=MAX_RECENT_BEHAVIOURS,  # what a regeneration request may carry
        description="behaviours kept per user",
    )
    window_s: int = Field(7 * 86_400, ge=1, description="behaviours older than this are dropped")
    max_history: int = Field(
        MAX_HISTORY, ge=1, le=MAX_HISTORY, description="distinct past queries kept per user"
    )
    half_life_s: int = Field(86_400, ge=1, description="interest profile half-life")

    policy: Literal["interest", "every_event"] = Field(
        "interest", description="interest: the trigger rule; every_event: fire on every behaviour"
    )
    near_duplicate: float = Field(0.6, gt=0, le=1, description="word Jaccard of a repeat search")
    drift_threshold: float = Field(0.6, gt=0, le=1, description="cosine distance that is drift")
    stale_after_s: int = Field(6 * 3_600, ge=1, description="refresh an active user this often")
    debounce_s: int = Field(300, ge=0, description="no two triggers of a user closer than this")
    budget: Literal["none", "local", "shared"] = Field(
        "none",
        description="what pays for regenerations: none (every trigger fires), local (this "
        "worker's own max_regenerations_per_s), shared (one bucket in Redis that follows the "
        "generators' measured capacity and backlog: cache.budget)",
    )
    max_regenerations_per_s: float = Field(0, ge=0, description="local: the cap; 0: none")
    regeneration_burst: float | None = Field(None, gt=0, description="default: one second's")
    budget_headroom: float = Field(2.0, gt=0, le=10, description="shared: refill x capacity")
    budget_max_queue_s: float = Field(
        2.0, gt=0, le=600, description="shared: generators' backlog at most this many seconds"
    )
    defer_max_s: float = Field(
        2.0, gt=0, le=3600, description="a trigger the budget cannot pay is given up after it"
    )

    def session_config(self) -> SessionConfig:
        return SessionConfig(
            max_recent=self.max_recent,
            window_ms=self.window_s * 1000,
            half_life_ms=self.half_life_s * 1000,
            max_history=self.max_history,
        )

    def trigger_policy(self) -> TriggerPolicy:
        return TriggerPolicy(
            near_duplicate=self.near_duplicate,
            drift_threshold=self.drift_threshold,
            stale_after_ms=self.stale_after_s * 1000,
            debounce_ms=self.debounce_s * 1000,
            every_event=self.policy == "every_event",
        )

    def governor(self) -> CostGovernor:
        rate = self.max_regenerations_per_s if self.budget == "local" else 0.0
        return CostGovernor(rate, self.regeneration_burst)

    def budget_policy(self) -> BudgetPolicy:
        return BudgetPolicy(headroom=self.budget_headroom, max_queue_s=self.budget_max_queue_s)
