"""What an offline evaluation reports, and writing it: ``results.json``, ``results.md`` and
``hr_at_k.png``.

The JSON is the record (config, data sizes, every predictor's metrics, HR@K curves, timings,
output-validation counts, the model's manifest); the markdown table and the plot are read off
it, so they can be rebuilt from an old ``results.json`` with :func:`write_report`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from training import TrainingError

PredictorKind = Literal["baseline", "zero-shot", "model", "served"]
GOAL_RATIO = 1.2
"""the issue's benchmark goal: the IL-SFT model's HR@10 >= 1.2x the best baseline's"""

TABLE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("hr@1", "HR@1"),
    ("hr@3", "HR@3"),
    ("hr@10", "HR@10"),
    ("hr@30", "HR@30"),
    ("hr_next@1", "next@1"),
    ("hr_next@10", "next@10"),
    ("hr_next@30", "next@30"),
    ("ndcg@10", "NDCG@10"),
    ("semantic@10", "sem@10"),
    ("distinct@10", "distinct@10"),
    ("categories@10", "domains@10"),
)
"""(metric key, column title) of the window protocol's table; a metric a run lacks shows "-"."""

DAY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("hit@1", "hit@1"),
    ("hit@3", "hit@3"),
    ("hit@10", "hit@10"),
    ("hit@30", "hit@30"),
    ("recall@10", "recall@10"),
    ("novel_hit@10", "novel@10"),
    ("real_words", "real words"),
    ("distinct@10", "distinct@10"),
    ("empty", "empty"),
)
"""the last-day protocol's columns (:mod:`training.daymetrics`)"""


def last_day(results: EvalResults) -> bool:
    """Whether the run used the last-day protocol (a record without one used the window)."""
    return results.config.get("protocol") == "last-day"


def headline(results: EvalResults) -> str:
    """The metric the model is compared on: hit@10 (last day) or HR@10 (window)."""
    return "hit@10" if last_day(results) else "hr@10"


@dataclass
class PredictorResult:
    """One predictor's figures on the held-out samples."""

    name: str
    kind: PredictorKind
    metrics: dict[str, float]
    """:func:`training.metrics.evaluate`'s means (``hr@K``, ``hr_next@K``, ``ndcg@K``...)"""
    hr_curve: list[float]
    """HR@K over the label window (last day: any-hit@K) for K = 1, 2, ... (index K - 1)"""
    hr_next_curve: list[float]
    """HR@K of the next search (last day: novel-hit@K), same K"""
    fit_seconds: float
    predict_seconds: float
    contexts: int
    """lists predicted"""
    queries: int
    """queries in those lists"""
    validation: dict[str, int] | None = None
    """LLMs: :class:`generators.output.OutputStats` of the backend (lists, malformed...)"""
    model: dict[str, Any] | None = None
    """LLMs: the folder, registry tag and manifest"""

    @property
    def contexts_per_s(self) -> float:
        return self.contexts / self.predict_seconds if self.predict_seconds > 0 else 0.0

    @property
    def queries_per_s(self) -> float:
        return self.queries / self.predict_seconds if self.predict_seconds > 0 else 0.0


@dataclass
class EvalResults:
    """A whole run: what was asked, what data it saw, every predictor's result, notes."""

    config: dict[str, Any]
    data: dict[str, Any]
    predictors: list[PredictorResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """things a reader must know (no trained model, a model trained on another split...)"""
    timings: dict[str, float] = field(default_factory=dict)
    """stage wall times in seconds (loading, split, SmolLM2 conversion...)"""

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for entry, result in zip(out["predictors"], self.predictors, strict=True):
            entry["contexts_per_s"] = result.contexts_per_s
            entry["queries_per_s"] = result.queries_per_s
        out["comparison"] = comparison(self)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalResults:
        """Read back :meth:`to_dict`'s output (derived fields are recomputed)."""
        fields = PredictorResult.__dataclass_fields__
        try:
            predictors = [
                PredictorResult(**{k: v for k, v in p.items() if k in fields})
                for p in data["predictors"]
            ]
            return cls(data["config"], data["data"], predictors, data["notes"], data["timings"])
        except (KeyError, TypeError) as exc:
            raise TrainingError(f"not an aigq eval results record: {exc}") from exc


def comparison(results: EvalResults, metric: str | None = None) -> dict[str, Any]:
    """The trained model (the first ``model`` predictor) against the best baseline (zero-shot
    included) on ``metric`` (default :func:`headline`): their values, the ratio and whether it
    meets :data:`GOAL_RATIO`."""
    metric = metric or headline(results)
    models = [p for p in results.predictors if p.kind == "model"]
    baselines = [p for p in results.predictors if p.kind in ("baseline", "zero-shot")]
    out: dict[str, Any] = {"metric": metric, "goal_ratio": GOAL_RATIO}
    if not models or not baselines:
        out["verdict"] = "no trained model" if not models else "no baseline"
        return out
    model = models[0]
    best = max(baselines, key=lambda p: p.metrics.get(metric, 0.0))
    value, base = model.metrics.get(metric, 0.0), best.metrics.get(metric, 0.0)
    ratio = value / base if base > 0 else None  # None: no baseline hit anything
    out.update(
        model=model.name, model_value=value, baseline=best.name, baseline_value=base,
        ratio=ratio, met=value > 0 if ratio is None else ratio >= GOAL_RATIO,
    )  # fmt: skip
    out["verdict"] = "met" if out["met"] else "NOT met"
    return out


def comparison_line(results: EvalResults) -> str:
    """One line: the model's HR@10 (hit@10) over the best baseline's, and the verdict."""
    c = comparison(results)
    title = "HR@10" if c["metric"] == "hr@10" else c["metric"]
    if "ratio" not in c:
        return f"{title}, model vs best baseline: not computed ({c['verdict']})"
    ratio = "n/a" if c["ratio"] is None else f"{c['ratio']:.2f}x"
    return (
        f"{title}: {c['model']} {c['model_value']:.4f} / best baseline {c['baseline']} "
        f"{c['baseline_value']:.4f} = {ratio} (goal >= {GOAL_RATIO}: {c['verdict']})"
    )


def _cell(value: float | None, key: str) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if key.startswith(("distinct", "categories")) else f"{value:.4f}"


def markdown_table(results: EvalResults) -> str:
    """Predictor rows, metric columns, then throughput (lists/s) and validation failures."""
    columns = DAY_COLUMNS if last_day(results) else TABLE_COLUMNS
    head = ["predictor", *(title for _, title in columns), "lists/s", "malformed"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p in results.predictors:
        cells = [_cell(p.metrics.get(key), key) for key, _ in columns]
        malformed = (
            f"{p.validation.get('malformed_lists', 0)}/{p.validation.get('lists', 0)}"
            if p.validation
            else "-"
        )
        row = [p.name, *cells, f"{p.contexts_per_s:,.1f}", malformed]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def manifest_line(model: dict[str, Any] | None) -> str | None:
    """The model's size, training time and speed from its manifest's ``metrics``, if any."""
    if not model:
        return None
    manifest = model.get("manifest") or {}
    metrics = manifest.get("metrics") or {}
    parts = []
    if isinstance(metrics.get("params"), int | float):
        parts.append(f"{metrics['params'] / 1e6:.2f}M parameters")
    if isinstance(metrics.get("train_seconds"), int | float):
        parts.append(f"trained in {metrics['train_seconds']:,.0f} s")
    if isinstance(metrics.get("tokens_per_s"), int | float):
        parts.append(f"{metrics['tokens_per_s']:,.0f} training tokens/s")
    what = ", ".join(parts) or "no size or training figures in its manifest"
    return f"{model.get('tag') or model.get('path')}: {what}"


def markdown(results: EvalResults) -> str:
    """The whole ``results.md``: data line, table, model lines, notes, the goal line."""
    d = results.data
    if last_day(results):
        source = results.config.get("heldout_data") or "the split's held-out users"
        about = (
            f"Last-day protocol: {d.get('heldout_users', 0):,} held-out users ({source}), each "
            f"on their last search day ({d.get('novel_users', 0):,} with a query new to them "
            f"that day); baselines fitted on {d.get('train_samples', 0):,} training samples "
            f"of {d.get('train_users', 0):,} users before {results.config.get('cut')}."
        )
    else:
        about = (
            f"{d.get('test_samples', 0):,} held-out samples ({d.get('test_with_next', 0):,} with a "
            f"next search) from {d.get('heldout_users', 0):,} held-out users; baselines fitted on "
            f"{d.get('train_samples', 0):,} training samples of {d.get('train_users', 0):,} users. "
            f"Cut {results.config.get('cut')}, label window {results.config.get('window_days')} "
            "days. LLM lists hold at most "
            f"{results.config.get('k')} queries, so their HR@30 is their HR@10."
        )
    lines = [
        "# aigq eval",
        "",
        about,
        "",
        markdown_table(results),
        "",
    ]
    for p in results.predictors:
        line = manifest_line(p.model) if p.kind == "model" else None
        if line:
            lines.append(f"- model {line}")
    lines.extend(f"- note: {note}" for note in results.notes)
    lines += ["", comparison_line(results), ""]
    return "\n".join(lines)


def plot_hr_curves(results: EvalResults, path: Path) -> None:
    """HR@K (label window, solid; next search, dotted) for K = 1..30, one colour per
    predictor. Agg backend: no display needed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for i, p in enumerate(results.predictors):
        colour = f"C{i % 10}"
        for axis, curve in zip(axes, (p.hr_curve, p.hr_next_curve), strict=True):
            ks = list(range(1, len(curve) + 1))
            axis.plot(ks, curve, color=colour, label=p.name, marker="." if len(ks) < 40 else "")
    if last_day(results):
        titles = ("any-hit@K, last search day", "novel-hit@K, last search day")
    else:
        window = f"label window ({results.config.get('window_days', '?')} days)"
        titles = (f"Query HR@K, {window}", "Query HR@K, next search")
    for axis, title in zip(axes, titles, strict=True):
        axis.set_title(title)
        axis.set_xlabel("K")
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("HR@K")
    axes[0].legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


@dataclass(frozen=True)
class ReportFiles:
    json: Path
    markdown: Path
    plot: Path


def write_report(results: EvalResults, out: Path) -> ReportFiles:
    """Write the three files into ``out`` (created if needed)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        files = ReportFiles(out / "results.json", out / "results.md", out / "hr_at_k.png")
        files.json.write_text(json.dumps(results.to_dict(), indent=2, default=str) + "\n")
        files.markdown.write_text(markdown(results))
    except OSError as exc:
        raise TrainingError(f"cannot write the report into {out}: {exc}") from exc
    plot_hr_curves(results, files.plot)
    return files
