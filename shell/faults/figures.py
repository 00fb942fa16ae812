"""What one fault scenario measured, and its verdict (pure: no I/O).

Events are counted per user: a scenario knows how many valid events of each user it had
acknowledged by the broker (``want``) and reads how many each user's session state counts
(``got``). An event missing from the count is *lost*, one counted twice is *duplicated*. An
invalid record must be dead-lettered instead: one that is neither applied nor dead-lettered is
lost as well.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Count:
    """Valid events sent against what the session state counts."""

    sent: int
    applied: int
    lost: int
    duplicated: int


def compare(want: Mapping[str, int], got: Mapping[str, int]) -> Count:
    """Per user: events short of ``want`` are lost, events beyond it duplicated. Users
    ``got`` counts that were never sent count whole as duplicated."""
    lost = sum(max(0, n - got.get(user, 0)) for user, n in want.items())
    duplicated = sum(max(0, n - want.get(user, 0)) for user, n in got.items())
    applied = sum(got.get(user, 0) for user in want)
    return Count(sum(want.values()), applied, lost, duplicated)


@dataclass
class Figures:
    """One row of the printout; ``failures`` empty means the scenario passed."""

    name: str
    events_sent: int = 0
    applied: int | None = None
    """valid events the session state counts (the changelog's per-user versions)"""
    applied_metrics: int | None = None
    """the same read from the worker's /metrics; None where a restart reset its counters"""
    lost: int = 0
    duplicated: int = 0
    dead_lettered: int = 0
    requests_sent: int = 0
    """read-API requests (HTTP) made while the scenario ran"""
    requests_failed: int = 0
    crashed: list[str] = field(default_factory=list)
    """processes that died unasked, or exited non-zero when asked to stop"""
    unstoppable: list[str] = field(default_factory=list)
    """processes still running after SIGTERM and the stop deadline (then killed)"""
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    skipped: str = ""

    def add(self, count: Count) -> None:
        """Fold a comparison of valid events into the row."""
        self.events_sent += count.sent
        self.applied = (self.applied or 0) + count.applied
        self.lost += count.lost
        self.duplicated += count.duplicated

    def check(self, ok: bool, failure: str) -> bool:
        """Record ``failure`` unless ``ok``; return ``ok``."""
        if not ok:
            self.failures.append(failure)
        return ok

    def note(self, text: str) -> None:
        self.notes.append(text)

    @property
    def passed(self) -> bool:
        return not self.skipped and not self.failures and not self.broken

    @property
    def broken(self) -> list[str]:
        """The checks every scenario makes: nothing lost or doubled, every process ran and
        stopped when asked."""
        out = []
        if self.lost:
            out.append(f"{self.lost:,} events lost")
        if self.duplicated:
            out.append(f"{self.duplicated:,} events counted twice")
        if self.crashed:
            out.append("crashed: " + ", ".join(self.crashed))
        if self.unstoppable:
            out.append("would not stop: " + ", ".join(self.unstoppable))
        return out

    @property
    def verdict(self) -> str:
        if self.skipped:
            return f"skipped: {self.skipped}"
        reasons = self.broken + self.failures
        return "pass" if not reasons else "FAIL: " + "; ".join(reasons)
