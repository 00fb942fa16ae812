"""The suite's printout: one row per scenario, then each scenario's notes (pure)."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table

from shell.faults.figures import Figures


def _applied(f: Figures) -> str:
    state = "-" if f.applied is None else f"{f.applied:,}"
    metrics = "-" if f.applied_metrics is None else f"{f.applied_metrics:,}"
    return f"{state} / {metrics}"


def _names(names: list[str]) -> str:
    return ", ".join(names) if names else "0"


def table(rows: Sequence[Figures], title: str) -> Table:
    out = Table(title=title)
    out.add_column("scenario")
    for name in ("events sent", "applied (state / metrics)", "lost", "duplicated",
                 "dead-lettered", "API requests sent / failed"):  # fmt: skip
        out.add_column(name, justify="right")
    out.add_column("crashed")
    out.add_column("would not stop")
    out.add_column("s", justify="right")
    out.add_column("verdict")
    for f in rows:
        verdict = "pass" if f.passed else "skipped" if f.skipped else "[bold red]FAIL[/]"
        out.add_row(
            f.name, f"{f.events_sent:,}", _applied(f), f"{f.lost:,}", f"{f.duplicated:,}",
            f"{f.dead_lettered:,}", f"{f.requests_sent:,} / {f.requests_failed:,}",
            _names(f.crashed), _names(f.unstoppable), f"{f.seconds:.0f}", verdict,
        )  # fmt: skip
    return out


def notes(rows: Sequence[Figures]) -> list[str]:
    """Each scenario's verdict with every reason, then its notes."""
    return [f"{f.name}: {line}" for f in rows for line in (f.verdict, *f.notes)]


def summary(rows: Sequence[Figures]) -> str:
    failed = [f.name for f in rows if not f.passed and not f.skipped]
    skipped = [f.name for f in rows if f.skipped]
    text = f"{len(rows) - len(failed) - len(skipped)} of {len(rows)} scenarios passed"
    if failed:
        text += f"; failed: {', '.join(failed)}"
    if skipped:
        text += f"; skipped: {', '.join(skipped)}"
    return text
