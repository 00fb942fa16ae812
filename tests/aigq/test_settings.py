"""Settings: AIGQ_ environment variables, errors that name the variable, secrets kept secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from aigq.errors import ConfigError
from aigq.settings import (
    KafkaSettings,
    RedisSettings,
    TopicSettings,
    WebSettings,
    load,
    split_host_port,
)


def test_defaults_point_at_the_local_stack() -> None:
    kafka, redis, topics = load(KafkaSettings), load(RedisSettings), load(TopicSettings)
    assert kafka.servers == [("127.0.0.1", 9092)]
    assert redis.host_port == ("127.0.0.1", 6379)
    assert topics.name("search") == "aigq.search"
    assert topics.all_names()[-4:] == [
        "aigq.dead_letter", "aigq.regenerate", "aigq.results", "aigq.models",
    ]  # fmt: skip


def test_environment_is_read_when_loaded_not_before(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIGQ_KAFKA_BOOTSTRAP_SERVERS", " b1:9093 , [::1]:9094 ,")
    monkeypatch.setenv("AIGQ_TOPICS_PREFIX", "prod.eu")
    monkeypatch.setenv("AIGQ_TOPICS_PARTITIONS", "32")
    kafka = load(KafkaSettings)
    assert kafka.bootstrap_servers == "b1:9093,[::1]:9094"
    assert kafka.servers == [("b1", 9093), ("::1", 9094)]
    assert load(TopicSettings).name("click") == "prod.eu.click"
    assert load(TopicSettings).partitions == 32


def test_errors_name_the_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIGQ_KAFKA_SECURITY_PROTOCOL", "TLS")
    with pytest.raises(ConfigError, match="AIGQ_KAFKA_SECURITY_PROTOCOL"):
        load(KafkaSettings)
    with pytest.raises(ConfigError, match="AIGQ_TOPICS_PARTITIONS"):
        load(TopicSettings, partitions=0)
    with pytest.raises(ConfigError, match=r"AIGQ_TOPICS_PREFIX.*valid Kafka topic"):
        load(TopicSettings, prefix="bad prefix")
    with pytest.raises(ConfigError, match=r"AIGQ_REDIS_URL.*scheme"):
        load(RedisSettings, url="http://x:6379")


def test_a_renamed_variable_is_an_error_that_names_its_replacement(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIGQ_REDIS_KEY_PREFIX", "prod:")
    assert load(RedisSettings).key_prefix == "prod:"
    monkeypatch.setenv("AIGQ_HINTS_CACHE_PREFIX", "prod:")  # the old read API setting
    with pytest.raises(ConfigError, match="AIGQ_HINTS_CACHE_PREFIX is no longer read: set "
                       "AIGQ_REDIS_KEY_PREFIX"):  # fmt: skip
        load(RedisSettings)


def test_sasl_needs_all_three_fields_and_keeps_the_password_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIGQ_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    with pytest.raises(ConfigError, match="AIGQ_KAFKA_SASL_MECHANISM"):
        load(KafkaSettings)
    monkeypatch.setenv("AIGQ_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("AIGQ_KAFKA_SASL_USERNAME", "svc")
    monkeypatch.setenv("AIGQ_KAFKA_SASL_PASSWORD", "hunter2")
    kafka = load(KafkaSettings)
    assert "hunter2" not in repr(kafka) and "hunter2" not in str(kafka.model_dump())
    config = kafka.kafka_python_config()
    assert config["sasl_plain_password"] == "hunter2"
    assert (config["security_protocol"], config["sasl_mechanism"]) == ("SASL_SSL", "SCRAM-SHA-512")


def test_ssl_files_must_exist_and_cert_goes_with_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"AIGQ_KAFKA_SSL_CAFILE.*not a readable file"):
        load(KafkaSettings, ssl_cafile=tmp_path / "missing.pem")
    cert = tmp_path / "cert.pem"
    cert.write_text("x")
    with pytest.raises(ConfigError, match="go together"):
        load(KafkaSettings, security_protocol="SSL", ssl_certfile=cert)
    config = load(KafkaSettings, security_protocol="SSL", ssl_cafile=cert).kafka_python_config()
    assert config["ssl_cafile"] == str(cert)


def test_settings_are_frozen() -> None:
    topics = load(TopicSettings)
    with pytest.raises(ValueError, match="frozen"):
        topics.prefix = "x"  # type: ignore[misc]


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ConfigError, match="Extra inputs"):
        load(TopicSettings, partitons=3)


def test_redis_password_is_redacted_and_tls_follows_the_scheme() -> None:
    redis = load(RedisSettings, url="rediss://:s3cret@cache.internal:6380/2", password="p")
    assert redis.tls
    assert redis.redacted_url() == "rediss://:***@cache.internal:6380/2"
    assert "s3cret" not in redis.redacted_url()
    assert "'p'" not in repr(redis)
    assert not load(RedisSettings).tls


@pytest.mark.parametrize("address", ["", "host:port", ":9092"])
def test_bad_addresses(address: str) -> None:
    with pytest.raises(ValueError, match=r"port|host"):
        split_host_port(address, 9092)


def test_web_server_binds_loopback_unless_told_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    web = load(WebSettings)
    assert web.faust_options() == {
        "web_bind": "127.0.0.1",
        "web_port": 6066,
        "web_host": "127.0.0.1",
    }
    monkeypatch.setenv("AIGQ_WEB_BIND", "0.0.0.0")
    monkeypatch.setenv("AIGQ_WEB_PORT", "7000")
    assert load(WebSettings).faust_options()["web_bind"] == "0.0.0.0"
    assert load(WebSettings).faust_options()["web_port"] == 7000
    monkeypatch.setenv("AIGQ_WEB_BIND", "every interface")
    with pytest.raises(ConfigError, match="AIGQ_WEB_BIND"):
        load(WebSettings)
