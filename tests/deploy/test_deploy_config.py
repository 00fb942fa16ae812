"""deploy/k8s/base/config/*.env follow the settings classes (python -m shell.deploy_config)."""

from __future__ import annotations

import pytest
from pydantic_settings import BaseSettings

from aigq.settings import KafkaSettings, RedisSettings, TopicSettings, WebSettings
from cache.settings import HintSettings, ServeSettings
from generators.settings import GeneratorSettings
from shell import deploy_config
from streams.settings import StreamSettings
from training.trainer_settings import TrainerSettings


def _entries(text: str) -> dict[str, str]:
    """The env file's variables as kustomize reads them (comment lines skipped)."""
    out = {}
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            out[name] = value
    return out


def test_the_env_files_are_generated_from_the_classes() -> None:
    files = deploy_config.render()
    for name, text in files.items():
        path = deploy_config.CONFIG_DIR / name
        assert path.read_text() == text, "run: python -m shell.deploy_config"
    on_disk = {p.name for p in deploy_config.CONFIG_DIR.glob("*.env")}
    assert on_disk == set(files)


def test_each_role_reads_the_classes_its_command_loads() -> None:
    """Read from the commands' code; spelled out here by hand once, as a check of the reader."""
    expected: dict[str, set[type[BaseSettings]]] = {
        "worker": {KafkaSettings, TopicSettings, WebSettings, StreamSettings, RedisSettings},
        "generator": {GeneratorSettings, KafkaSettings, TopicSettings, RedisSettings},
        "api": {ServeSettings, HintSettings, RedisSettings, KafkaSettings, TopicSettings},
        "trainer": {TrainerSettings, KafkaSettings, TopicSettings},
        "backfill": {StreamSettings, KafkaSettings, TopicSettings},
    }
    for role, classes in expected.items():
        assert set(deploy_config.role_settings(role)) == classes, role


def test_every_variable_is_in_one_file_and_secrets_only_in_the_secret() -> None:
    files = deploy_config.render()
    for role in deploy_config.ROLES:
        for var in deploy_config.role_variables(role):
            holders = [name for name, text in files.items() if f"{var.name}=" in text]
            assert len(holders) == 1, (var.name, holders)
            assert (holders[0] == "secrets.env") == var.secret, var.name
            if var.value is None:
                assert f"# {var.name}=  (unset: " in files[holders[0]]
            else:
                assert _entries(files[holders[0]])[var.name] == var.value


def test_shared_classes_go_to_common() -> None:
    common = _entries(deploy_config.render()["common.env"])
    assert common["AIGQ_KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert common["AIGQ_REDIS_URL"] == "redis://redis:6379/0"
    assert common["AIGQ_TOPICS_PREFIX"] == "aigq"
    assert common["AIGQ_LOG_LEVEL"] == "INFO"
    assert not any(name.startswith("AIGQ_STREAM_") for name in common)


@pytest.mark.parametrize(
    "role", [r for r in deploy_config.ROLES if r not in deploy_config.CONFIG_OF]
)
def test_the_values_load_and_only_the_in_cluster_ones_differ_from_the_defaults(
    role: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = deploy_config.render()
    env = _entries(files["common.env"]) | _entries(files[f"{role}.env"])
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for cls in deploy_config.role_settings(role):
        loaded, default = cls(), cls.model_construct()
        prefix = str(cls.model_config.get("env_prefix", ""))
        for field in cls.model_fields:
            name = f"{prefix}{field.upper()}"
            if name not in deploy_config.IN_CLUSTER:
                assert getattr(loaded, field) == getattr(default, field), name
            else:
                assert str(getattr(loaded, field)) == deploy_config.IN_CLUSTER[name], name


def test_a_default_of_none_is_written_as_unset() -> None:
    variables = {v.name: v for v in deploy_config.variables(KafkaSettings)}
    assert variables["AIGQ_KAFKA_SASL_MECHANISM"].value is None
    assert variables["AIGQ_KAFKA_SASL_PASSWORD"].secret
    assert variables["AIGQ_KAFKA_FETCH_MAX_WAIT_MS"].value == "100"
    serve = {v.name: v for v in deploy_config.variables(ServeSettings)}
    assert serve["AIGQ_SERVE_API_KEYS"].secret and serve["AIGQ_SERVE_API_KEYS"].value is None
    assert serve["AIGQ_SERVE_ACCESS_LOG"].value == "false"
