"""``aigq trainer --once`` against the real broker: feedback in, judged models out.

The feedback is the synthetic shop's log with simulated exposures and hint clicks
(:func:`training.ctr_data.simulated_feedback`), produced in time order, so the records'
Kafka timestamps (their arrival) keep that order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from kafka import KafkaProducer

from aigq.codec import encode
from aigq.datasets.base import Malformed
from aigq.datasets.synthetic import SyntheticConfig, generate
from aigq.events import HintClickEvent, HintExposureEvent, ModelAnnouncement
from aigq.registry import SHIPPED, Registry
from aigq.settings import KafkaSettings, TopicSettings
from streams.simulator import SimulatorSettings
from training.ctr_data import simulated_feedback
from training.samples import AnyEvent, group_by_user
from training.trainer import Trainer
from training.trainer_cycle import ctr_cut
from training.trainer_settings import TrainerSettings

pytestmark = pytest.mark.integration


def _feedback() -> list[AnyEvent]:
    items = [e for e in generate(SyntheticConfig(users=60, days=6)) if not isinstance(e, Malformed)]
    streams = simulated_feedback(group_by_user(items), SimulatorSettings(rouge_threshold=0.5))
    events = [e for stream in streams.values() for e in stream]
    return sorted(events, key=lambda e: e.ts)


def _produce(kafka: KafkaSettings, topics: TopicSettings, events: list[AnyEvent]) -> None:
    producer = KafkaProducer(**kafka.kafka_python_config())
    try:
        for event in events:
            producer.send(topics.name(event.type), encode(event), key=event.user_id.encode())
        producer.flush()
    finally:
        producer.close()


def test_one_cycle_trains_judges_publishes_and_announces(
    kafka: KafkaSettings,
    topics: TopicSettings,
    tmp_path: Path,
    read_topics: Callable[[list[str], int], list[object]],
) -> None:
    events = _feedback()
    clicks = sum(isinstance(e, HintClickEvent) for e in events)
    assert sum(isinstance(e, HintExposureEvent) for e in events) > 100 and clicks > 20
    _produce(kafka, topics, events)
    settings = TrainerSettings(
        state_dir=tmp_path / "trainer", group_id=f"{topics.prefix}-trainer",
        min_exposures=50, min_samples=5, sft_steps=3, sft_batch_size=4, eval_users=6,
        eval_max_tokens=16, heldout_fraction=0.2, tolerance=1.0, threads=1,
        grpo_steps=2, grpo_prompts_per_step=2, grpo_group=2,
    )  # fmt: skip
    registry = Registry(tmp_path / "registry", shipped=SHIPPED)
    trainer = Trainer(kafka, topics, settings, registry=registry)
    report = asyncio.run(trainer.run(once=True))

    assert report is not None and report.error is None
    assert report.records == len(events)  # every record stored once, read back
    assert report.clicks == clicks
    # the CTR model: no current one, so the candidate is published
    assert report.ctr["decision"] == "published", report.ctr
    assert registry.latest("aigq-ctr") is not None
    # the generator: fine-tuned from the shipped model, judged; tolerance 1 lets it through
    assert report.generator["current"] == "aigq-direct@shipped"
    assert report.generator["decision"] == "published", report.generator
    sft = registry.get("aigq-direct", "v0001")
    assert sft.manifest()["kind"] == "il-sft"
    assert sft.manifest()["gate"]["users"] == report.generator["gate_users"] > 0
    # then IL-GRPO from that IL-SFT model, rewarded by the new CTR model, judged the same way
    grpo = report.generator["grpo"]
    assert grpo["current"] == "aigq-direct@v0001" and grpo["decision"] == "published", grpo
    latest = registry.latest("aigq-direct")
    assert latest is not None and latest.version == "v0002"
    manifest = latest.manifest()
    assert manifest["kind"] == "il-grpo" and manifest["ctr"] == "aigq-ctr@v0001"
    assert manifest["gate"]["parent"] == "aigq-direct@v0001"
    # all three announced on <prefix>.models, and the report is on disk
    records = read_topics([topics.name("models")], 3)
    announced = {ModelAnnouncement.model_validate_json(r.value).tag for r in records}  # type: ignore[attr-defined]
    assert announced == set(report.announced)
    assert announced == {"aigq-ctr@v0001", "aigq-direct@v0001", "aigq-direct@v0002"}
    assert len(list((tmp_path / "trainer" / "cycles").glob("*.json"))) == 1

    # a second run reads nothing new (offsets committed after the store's flush)
    again = Trainer(kafka, topics, settings, registry=registry)
    asyncio.run(again.run(once=True))
    assert again.store.counts["stored"] == 0


def test_a_candidate_worse_than_the_current_one_is_not_published(
    kafka: KafkaSettings, topics: TopicSettings, tmp_path: Path
) -> None:
    _produce(kafka, topics, _feedback())
    # the gate wants the candidate better than the current one by more than any hit rate
    settings = TrainerSettings(
        state_dir=tmp_path / "trainer", group_id=f"{topics.prefix}-trainer2",
        min_exposures=10**9, min_samples=5, sft_steps=2, sft_batch_size=4, eval_users=4,
        eval_max_tokens=16, heldout_fraction=0.2, threads=1, grpo_steps=0,
    )  # fmt: skip
    registry = Registry(tmp_path / "registry", shipped=SHIPPED)
    report = asyncio.run(Trainer(kafka, topics, settings, registry=registry).run(once=True))
    assert report is not None
    assert report.ctr["decision"] == "skipped: too few exposures"
    decision = report.generator["decision"]
    if decision == "kept: candidate worse":
        assert registry.versions("aigq-direct") == []  # the candidate is gone, not published
        assert not any((tmp_path / "registry" / "aigq-direct").iterdir())
    else:  # equal hit rates pass the gate ("not worse")
        assert decision == "published"
        cand, cur = report.generator["candidate_metrics"], report.generator["current_metrics"]
        assert cand["hit@10"] >= cur["hit@10"]


def test_the_ctr_cut_leaves_the_newest_share_of_the_time_span_to_the_test() -> None:
    assert ctr_cut([0, 100], 0.2) == 81
    assert ctr_cut([5, 5], 0.2) is None
    assert ctr_cut([], 0.2) is None
