"""Announcing model versions and rolling back: the choice of version, the announcement a
registry version makes, and ``aigq model rollback`` against the real broker."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from aigq.errors import RegistryError
from aigq.events import ModelAnnouncement
from aigq.registry import Registry
from aigq.settings import KafkaSettings, TopicSettings
from generators.announce import announcement_for, rollback, rollback_target

VERSIONS = ["v0001", "v0002", "v0010"]
TS = 1_767_225_600_000


def test_rollback_goes_to_the_version_published_before_latest() -> None:
    assert rollback_target(VERSIONS, "v0010") == "v0002"
    assert rollback_target(VERSIONS, "v0002") == "v0001"
    with pytest.raises(RegistryError, match="oldest"):
        rollback_target(VERSIONS, "v0001")
    with pytest.raises(RegistryError, match="not a published version"):
        rollback_target(VERSIONS, "")  # LATEST is the shipped default: nothing of ours


def test_rollback_to_a_named_version_must_be_another_published_one() -> None:
    assert rollback_target(VERSIONS, "v0002", to="v0010") == "v0010"  # "back" to a newer one
    assert rollback_target(VERSIONS, "v0010", to="v0001") == "v0001"
    with pytest.raises(RegistryError, match="LATEST already"):
        rollback_target(VERSIONS, "v0010", to="v0010")
    with pytest.raises(RegistryError, match="not a published version"):
        rollback_target(VERSIONS, "v0010", to="v0003")


def _registry(root: Path) -> Registry:
    registry = Registry(root, shipped=None)
    for loss in (2.0, 1.5, 1.2):
        registry.publish(registry.reserve("m"), {"kind": "il-sft", "metrics": {"val_loss": loss}})
    return registry


def _latest(registry: Registry, name: str) -> str:
    ref = registry.latest(name)
    return ref.version if ref is not None else ""


def test_rollback_moves_latest_back_one_version_at_a_time(tmp_path: Path) -> None:
    registry = _registry(tmp_path)
    assert rollback(registry, "m").version == "v0002"
    assert _latest(registry, "m") == "v0002"
    assert rollback(registry, "m").version == "v0001"
    assert rollback(registry, "m", to="v0003").version == "v0003"


def test_a_registry_version_announces_its_folder_and_whether_it_is_an_adapter(
    tmp_path: Path,
) -> None:
    registry = _registry(tmp_path)
    ref = registry.get("m", "v0002")
    plain = announcement_for(ref, reason="rollback", ts=TS)
    assert (plain.tag, plain.path, plain.adapter, plain.base) == (
        "m@v0002",
        str(ref.path),
        False,
        "",
    )
    assert (plain.kind, plain.reason, plain.ts) == ("generator", "rollback", TS)
    (ref.path / "adapter_config.json").write_text(
        json.dumps({"base_model_name_or_path": "/models/base", "r": 16})
    )
    lora = announcement_for(ref, kind="ctr")
    assert (lora.adapter, lora.base, lora.kind, lora.reason) == (
        True,
        "/models/base",
        "ctr",
        "publish",
    )


@pytest.mark.integration
def test_aigq_model_rollback_moves_latest_and_announces_it(
    kafka: KafkaSettings,
    topics: TopicSettings,
    read_topics: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from shell.cli import app

    registry = _registry(tmp_path)
    monkeypatch.setenv("AIGQ_MODEL_REGISTRY", str(tmp_path))
    monkeypatch.setenv("AIGQ_KAFKA_BOOTSTRAP_SERVERS", kafka.bootstrap_servers)
    monkeypatch.setenv("AIGQ_TOPICS_PREFIX", topics.prefix)
    runner = CliRunner()

    result = runner.invoke(app, ["model", "rollback", "m"])
    assert result.exit_code == 0, result.output
    assert _latest(registry, "m") == "v0002"
    [record] = read_topics([topics.name("models")], 1)
    announced = ModelAnnouncement.model_validate_json(record.value)
    assert (announced.kind, announced.tag, announced.reason) == ("generator", "m@v0002", "rollback")
    assert record.key == b"m" and announced.path == str(tmp_path / "m" / "v0002")

    listed = runner.invoke(app, ["model", "list", "m"], env={"COLUMNS": "200"})
    assert listed.exit_code == 0, listed.output
    rows = [line for line in listed.output.splitlines() if "v000" in line]
    assert len(rows) == 3 and "*" in rows[1] and "val_loss=1.5" in rows[1]

    refused = runner.invoke(app, ["model", "rollback", "m", "--to", "v0009"])
    assert refused.exit_code == 1 and _latest(registry, "m") == "v0002"
