"""One trainer cycle: feedback in, judged candidates out, the better ones published.

Read top to bottom:

1. **The feedback.** Every record of the store (:mod:`training.feedback`), without repeats, on
   the arrival clock, grouped by user; users are split by hash into training and held-out
   ones (``AIGQ_TRAINER_HELDOUT_FRACTION``), so the gate judges on users nothing trained on.
2. **The CTR model** (:mod:`training.ctr_model`): a candidate trained on the exposures before
   the newest ``ctr_test_fraction`` of the time span, judged on the rest beside the current
   version; published when its AUC is not worse.
3. **The generation model**: IL-SFT (:mod:`training.sft`) from the current version on the
   training users' AIGQ-Direct samples (an exposure with a clicked hint: the clicked queries
   first, then the rest as shown), ``sft_steps`` steps, into an unpublished version.
4. **The gate** (:mod:`training.gate`): both versions generate for the held-out users at the
   start of their last search day; the candidate is published when its hit@10 is at least the
   current one's minus ``tolerance``, and announced on ``<prefix>.models``, which the
   generators follow (:mod:`generators.reload`). A candidate that is not published is deleted.
5. **IL-GRPO** (:mod:`training.grpo`, ``grpo_steps`` > 0): from the current generation model
   (step 3's candidate when it passed) on the same samples' prompts, rewarded by the current
   CTR model (step 2's when it passed), into an unpublished version, then the same gate.

Nothing is published before its gate passes, and publishing is one rename (LATEST): a cycle
that fails or is killed at any point leaves the current versions serving. The report says what
each stage took and decided; it is written to the state folder by the caller.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from aigq.events import HintClickEvent, HintExposureEvent, ModelAnnouncement, ModelKind
from aigq.registry import ModelRef, Registry
from training.feedback import Stored, read_events, restamp
from training.gate import gate_samples, judge, not_worse
from training.lastday import DaySample
from training.samples import AnyEvent, Sample, SampleConfig, direct_samples, group_by_user
from training.split import is_heldout
from training.trainer_settings import TrainerSettings

Announce = Callable[[ModelAnnouncement], None]
Log = Callable[[str], None]


@dataclass
class CycleReport:
    """What a cycle read, took and decided (JSON-ready through :func:`dataclasses.asdict`)."""

    started_ts: int
    records: int = 0
    users: int = 0
    exposures: int = 0
    clicks: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    ctr: dict[str, Any] = field(default_factory=dict)
    generator: dict[str, Any] = field(default_factory=dict)
    announced: list[str] = field(default_factory=list)
    error: str | None = None
    finished_ts: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Clock:
    """Seconds per stage, in the order they ran."""

    def __init__(self, report: CycleReport) -> None:
        self.report = report
        self.last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.report.seconds[stage] = round(now - self.last, 3)
        self.last = now


def _now_ms() -> int:
    return int(time.time() * 1000)


def run_cycle(
    stored: Sequence[Stored],
    settings: TrainerSettings,
    registry: Registry,
    announce: Announce,
    log: Log = lambda _: None,
) -> CycleReport:
    """One cycle over ``stored`` (see the module doc). Raises what a stage raises; what was
    published before the failure stays published and announced."""
    report = CycleReport(started_ts=_now_ms())
    clock = _Clock(report)
    records = read_events(stored)
    events = restamp(records)
    report.records, report.users = len(records), len({e.user_id for e in events})
    report.exposures = sum(isinstance(e, HintExposureEvent) for e in events)
    report.clicks = sum(isinstance(e, HintClickEvent) for e in events)
    f, salt = settings.heldout_fraction, settings.salt
    train = [e for e in events if not is_heldout(e.user_id, f, salt)]
    heldout = [r.event for r in records if is_heldout(r.event.user_id, f, salt)]
    clock.lap("read")
    log(
        f"cycle: {report.records:,} records of {report.users:,} users "
        f"({report.exposures:,} exposures, {report.clicks:,} hint clicks)"
    )
    report.ctr = _ctr_stage(events, settings, registry, announce, report, clock, log)
    report.generator = _generator_stage(
        train, heldout, settings, registry, announce, report, clock, log
    )
    report.finished_ts = _now_ms()
    return report


def _announcement(ref: ModelRef, kind: ModelKind) -> ModelAnnouncement:
    from generators.announce import announcement_for

    return announcement_for(ref, kind=kind)


def _publish(
    registry: Registry,
    ref: ModelRef,
    manifest: dict[str, Any],
    announce: Announce,
    report: CycleReport,
) -> None:
    registry.publish(ref, manifest)
    announcement = _announcement(ref, "generator")
    announce(announcement)
    report.announced.append(announcement.tag)


def _discard(ref: ModelRef) -> None:
    """Delete an unpublished candidate's folder (nothing ever loaded it)."""
    shutil.rmtree(ref.path, ignore_errors=True)


def _generator_stage(
    train: Sequence[AnyEvent],
    heldout: Sequence[AnyEvent],
    settings: TrainerSettings,
    registry: Registry,
    announce: Announce,
    report: CycleReport,
    clock: _Clock,
    log: Log,
) -> dict[str, Any]:
    samples = [s for s in direct_samples(train, SampleConfig()) if s.target()]
    clock.lap("generator_samples")
    out: dict[str, Any] = {"samples": len(samples)}
    if len(samples) < settings.min_samples:
        log(f"generator: {len(samples)} Direct samples (< {settings.min_samples}): not updated")
        out["decision"] = "skipped: too few samples"
        return out
    gate = gate_samples(heldout, settings.eval_users)
    out["gate_users"] = len(gate)
    if not gate:
        out["decision"] = "skipped: no held-out user with a last search day to judge on"
        log(f"generator: {out['decision']}")
        return out
    words = [e for e in train if not isinstance(e, HintExposureEvent | HintClickEvent)]
    judge_ = _Judge(gate, words, settings, registry, announce, report, clock, log)
    out |= _sft_update(samples, settings, registry, report, judge_, log)
    if settings.grpo_steps > 0:
        out["grpo"] = _grpo_update(samples, settings, registry, judge_, log)
    return out


@dataclass
class _Judge:
    """The generator's gate: a candidate against the current version on the held-out users,
    then published and announced, or deleted."""

    gate: Sequence[DaySample]
    words: Sequence[AnyEvent]
    settings: TrainerSettings
    registry: Registry
    announce: Announce
    report: CycleReport
    clock: _Clock
    log: Log

    def __call__(
        self, stage: str, candidate: ModelRef, current: ModelRef, manifest: dict[str, Any]
    ) -> dict[str, Any]:
        s = self.settings
        try:
            mine = judge("candidate", candidate.path, self.gate, self.words, s.eval_max_tokens)
            theirs = judge("current", current.path, self.gate, self.words, s.eval_max_tokens)
        except BaseException:
            _discard(candidate)
            raise
        self.clock.lap(f"{stage}_gate")
        out: dict[str, Any] = {
            "candidate": candidate.tag, "candidate_metrics": mine.metrics,
            "current_metrics": theirs.metrics,
        }  # fmt: skip
        ok = not_worse(mine.hit10, theirs.hit10, s.tolerance)
        self.log(
            f"{stage} gate on {len(self.gate)} held-out users: hit@10 {mine.hit10:.4f} "
            f"(candidate) vs {theirs.hit10:.4f} ({current.tag}): "
            + ("published" if ok else "kept the current one")
        )
        if not ok:
            _discard(candidate)
            out["decision"] = "kept: candidate worse"
            return out
        gated = {**manifest, "gate": {"candidate": mine.metrics, "current": theirs.metrics,
                                      "users": len(self.gate), "parent": current.tag}}  # fmt: skip
        _publish(self.registry, candidate, gated, self.announce, self.report)
        self.clock.lap(f"{stage}_publish")
        out["decision"] = "published"
        return out


def _sft_update(
    samples: Sequence[Sample],
    settings: TrainerSettings,
    registry: Registry,
    report: CycleReport,
    judge_: _Judge,
    log: Log,
) -> dict[str, Any]:
    """IL-SFT from the current version on the Direct samples, judged."""
    from training.sft import Pair, SFTConfig
    from training.sft import train as sft_train

    pairs = [Pair(s.prompt(), s.target()) for s in samples]
    current = registry.resolve(settings.generator)
    config = SFTConfig(
        base=str(current.path), name=settings.generator, max_steps=settings.sft_steps,
        batch_size=settings.sft_batch_size, lr=settings.sft_lr,
        warmup_steps=max(1, settings.sft_steps // 10), val_fraction=0.0,
        eval_every=settings.sft_steps, checkpoint_every=settings.sft_steps + 1,
        threads=settings.threads,
    )  # fmt: skip
    data = {
        "source": "feedback", "sample_kind": "direct", "train_pairs": len(pairs),
        "records": report.records, "heldout_fraction": settings.heldout_fraction,
        "salt": settings.salt, "command": "aigq trainer --once",
    }  # fmt: skip
    log(f"generator: IL-SFT from {current.tag} on {len(pairs):,} Direct samples, "
        f"{settings.sft_steps} steps")  # fmt: skip
    result = sft_train(pairs, config, registry, data, publish=False)
    judge_.clock.lap("generator_train")
    out = {"current": current.tag, "train_loss": result.metrics["train_loss"]}
    return out | judge_("generator", result.model, current, result.manifest)


def _grpo_update(
    samples: Sequence[Sample],
    settings: TrainerSettings,
    registry: Registry,
    judge_: _Judge,
    log: Log,
) -> dict[str, Any]:
    """IL-GRPO from the current version (the IL-SFT candidate when it was published) on the
    Direct samples' prompts, rewarded by the current CTR model, judged like any candidate."""
    from training.ctr_model import load_ctr
    from training.grpo import GRPOConfig
    from training.grpo import train as grpo_train
    from training.grpo_data import grpo_prompt

    prompts = [p for p in (grpo_prompt(s) for s in samples) if p.references]
    current = registry.resolve(settings.generator)
    ctr = registry.latest(settings.ctr)
    config = GRPOConfig(
        base=str(current.path), name=settings.generator, steps=settings.grpo_steps,
        prompts_per_step=settings.grpo_prompts_per_step, group=settings.grpo_group,
        lr=settings.grpo_lr, max_new_tokens=settings.eval_max_tokens,
        threads=settings.threads,
    )  # fmt: skip
    data = {"source": "feedback", "sample_kind": "direct", "prompts": len(prompts),
            "command": "aigq trainer --once"}  # fmt: skip
    log(f"generator: IL-GRPO from {current.tag} on {len(prompts):,} prompts, "
        f"{settings.grpo_steps} steps, CTR reward {ctr.tag if ctr else 'none'}")  # fmt: skip
    scorer = load_ctr(ctr.path).score if ctr is not None else None
    result = grpo_train(prompts, config, registry, data, scorer, ctr.tag if ctr else "",
                        publish=False)  # fmt: skip
    judge_.clock.lap("grpo_train")
    out = {"current": current.tag, "prompts": len(prompts), **result.metrics}
    return out | judge_("grpo", result.model, current, result.manifest)


def ctr_cut(times_ms: Sequence[int], test_fraction: float) -> int | None:
    """Where the CTR candidate's test side starts: the newest ``test_fraction`` of the span of
    ``times_ms`` (exposure arrival times). None when they span no time."""
    if not times_ms or min(times_ms) == max(times_ms):
        return None
    first, last = min(times_ms), max(times_ms)
    return first + int((last - first) * (1.0 - test_fraction)) + 1


def _ctr_stage(
    events: Sequence[AnyEvent],
    settings: TrainerSettings,
    registry: Registry,
    announce: Announce,
    report: CycleReport,
    clock: _Clock,
    log: Log,
) -> dict[str, Any]:
    from training.ctr_data import examples, split_by_day
    from training.ctr_eval import baseline_rows, metric_row
    from training.ctr_model import CtrConfig, discard, load_ctr, publish, train

    times = [e.ts for e in events if isinstance(e, HintExposureEvent)]
    cut = ctr_cut(times, settings.ctr_test_fraction)
    if len(times) < settings.min_exposures or cut is None:
        log(f"ctr: {len(times):,} exposures (< {settings.min_exposures}): not retrained")
        return {"exposures": len(times), "decision": "skipped: too few exposures"}
    rows = examples(group_by_user(events))
    train_rows, test_rows = split_by_day(rows, cut)
    clock.lap("ctr_examples")
    out: dict[str, Any] = {"train_rows": len(train_rows), "test_rows": len(test_rows)}
    if not any(r.label for r in train_rows) or not any(r.label for r in test_rows):
        out["decision"] = "skipped: no click on one side of the cut"
        log(f"ctr: {out['decision']}")
        return out
    config = CtrConfig(name=settings.ctr, threads=settings.threads)
    trained = train(train_rows, config, registry)
    clock.lap("ctr_train")
    table = [metric_row("candidate", test_rows, trained.model.score(test_rows))]
    current = registry.latest(settings.ctr)
    if current is not None:
        table.append(metric_row(current.tag, test_rows, load_ctr(current.path).score(test_rows)))
    table += baseline_rows(train_rows, test_rows)
    clock.lap("ctr_judge")
    out["table"] = [row._asdict() for row in table]
    best = table[1].auc if current is not None else None
    ok = best is None or not_worse(table[0].auc, best, settings.tolerance)
    others = ", ".join(f"{row.model} {row.auc:.4f}" for row in table[1:])
    log(
        f"ctr gate on {len(test_rows):,} later rows: AUC {table[0].auc:.4f} (candidate) vs "
        f"{others}: " + ("published" if ok else "kept the current one")
    )
    if not ok:
        discard(trained)
        out["decision"] = "kept: candidate worse"
        return out
    data = {"source": "feedback", "cut_ms": cut, "train_rows": len(train_rows),
            "records": report.records, "command": "aigq trainer --once"}  # fmt: skip
    publish(registry, trained, data, {"test": out["table"]})
    announcement = _announcement(trained.ref, "ctr")
    announce(announcement)
    report.announced.append(announcement.tag)
    clock.lap("ctr_publish")
    out |= {"candidate": trained.ref.tag, "decision": "published"}
    return out
