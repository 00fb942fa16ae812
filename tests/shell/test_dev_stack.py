"""``aigq dev up/down/status`` against the real tansu broker and Redis."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from aigq.dev.probe import free_port, port_open, wait_until
from aigq.dev.process import ManagedProcess
from aigq.dev.stack import DevSettings, DevStack
from aigq.errors import DevStackError
from aigq.settings import KafkaSettings, RedisSettings, TopicSettings
from shell.cli import app

pytestmark = pytest.mark.integration


@pytest.fixture
def own_stack(dev_stack: DevStack, tmp_path: Path) -> Iterator[DevStack]:
    """A second stack with its own broker port and state dir; always brought down."""
    stack = DevStack(
        kafka=KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}"),
        redis=dev_stack.redis,
        topics=TopicSettings(prefix="own", partitions=3),
        dev=DevSettings(state_dir=tmp_path / "state"),
    )
    yield stack
    stack.down()


def test_up_starts_the_broker_creates_topics_and_is_idempotent(own_stack: DevStack) -> None:
    first = own_stack.up()
    assert first.started == ["broker"]  # Redis already answers: checked, not started
    assert first.broker.reachable and first.broker.pid is not None
    assert first.redis.reachable and first.redis.pid is None
    assert [(t.name, t.partitions, t.created) for t in first.topics] == [
        (name, 3, True) for name in own_stack.topics.all_names()
    ]
    second = own_stack.up()
    assert second.started == []
    assert second.broker.pid == first.broker.pid
    assert all(t.partitions == 3 and not t.created for t in second.topics)


def test_down_stops_only_what_up_started(
    own_stack: DevStack, dev_stack: DevStack, tmp_path: Path
) -> None:
    own_stack.up()
    host, port = own_stack.broker_address()
    assert own_stack.down() == ["broker"]
    assert not port_open(host, port)
    assert own_stack.down() == []
    # A stack whose broker address is somebody else's broker uses it and never stops it.
    borrower = DevStack(
        dev_stack.kafka, dev_stack.redis, own_stack.topics, DevSettings(state_dir=tmp_path / "b")
    )
    assert borrower.status().broker.pid is None
    assert borrower.down() == []
    assert port_open(*dev_stack.broker_address())


def test_status_reports_a_down_broker(own_stack: DevStack) -> None:
    state = own_stack.status()
    assert not state.broker.reachable
    assert state.topics == []
    assert state.redis.reachable


def test_remote_broker_address_is_refused(dev_stack: DevStack, tmp_path: Path) -> None:
    stack = DevStack(
        KafkaSettings(bootstrap_servers="kafka.prod.internal:9092"),
        dev_stack.redis,
        dev_stack.topics,
        DevSettings(state_dir=tmp_path),
    )
    with pytest.raises(DevStackError, match="one loopback address"):
        stack.up()


def test_a_broker_that_cannot_start_is_reported_with_its_log(
    own_stack: DevStack, tmp_path: Path
) -> None:
    fake = tmp_path / "tansu"
    fake.write_text("#!/bin/sh\necho 'bind: address already in use' >&2\nexit 3\n")
    fake.chmod(0o755)
    broken = DevStack(
        own_stack.kafka,
        own_stack.redis,
        own_stack.topics,
        DevSettings(state_dir=tmp_path / "s", tansu_bin=fake, start_timeout_s=1),
    )
    with pytest.raises(DevStackError, match="address already in use"):
        broken.up()
    assert broken.broker_process.pid() is None


def test_cli_status_exit_codes(dev_stack: DevStack, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    monkeypatch.setenv("AIGQ_KAFKA_BOOTSTRAP_SERVERS", dev_stack.kafka.bootstrap_servers)
    monkeypatch.setenv("AIGQ_REDIS_URL", dev_stack.redis.url)
    monkeypatch.setenv("AIGQ_TOPICS_PREFIX", dev_stack.topics.prefix)
    monkeypatch.setenv("AIGQ_DEV_STATE_DIR", str(dev_stack.dev.state_dir))
    up = runner.invoke(app, ["dev", "status"])
    assert up.exit_code == 0, up.output
    assert f"{dev_stack.topics.prefix}.dead_letter" in up.output
    assert dev_stack.kafka.bootstrap_servers in up.output
    monkeypatch.setenv("AIGQ_KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{free_port()}")
    assert runner.invoke(app, ["dev", "status"]).exit_code == 1
    monkeypatch.setenv("AIGQ_TOPICS_PARTITIONS", "0")
    bad = runner.invoke(app, ["dev", "status"])
    assert bad.exit_code == 1
    assert "AIGQ_TOPICS_PARTITIONS" in bad.output


def test_stale_or_foreign_pid_files_are_ignored(tmp_path: Path) -> None:
    process = ManagedProcess("tansu", tmp_path, marker="tansu")
    process.pid_file.write_bytes(orjson.dumps({"pid": os.getpid()}))  # alive, but not tansu
    assert process.pid() is None
    assert not process.pid_file.exists()
    process.pid_file.write_bytes(b"garbage")
    assert process.pid() is None
    assert not process.stop()


def test_managed_process_start_log_and_stop(tmp_path: Path) -> None:
    process = ManagedProcess("sleeper", tmp_path, marker="sleep")
    pid = process.start(["sh", "-c", "echo started; exec sleep 30"])
    assert process.pid() == pid
    assert wait_until(lambda: "started" in process.log_file.read_text(), timeout_s=5)
    assert process.stop(timeout_s=5)
    assert process.pid() is None
    assert "started" in process.log_file.read_text()
    with pytest.raises(DevStackError, match="cannot start"):
        process.start([str(tmp_path / "no-such-binary")])


def test_up_starts_redis_when_none_answers_and_down_stops_it(
    own_stack: DevStack, tmp_path: Path
) -> None:
    port = free_port()
    stack = DevStack(
        own_stack.kafka,
        RedisSettings(url=f"redis://127.0.0.1:{port}/0", password="s3cret"),
        own_stack.topics,
        DevSettings(state_dir=tmp_path / "with-redis"),
    )
    try:
        state = stack.up()
        assert state.started == ["broker", "redis"]
        assert state.redis.reachable and state.redis.pid is not None
        assert state.redis.detail.startswith("redis ")
    finally:
        assert stack.down() == ["broker", "redis"]
    assert not port_open("127.0.0.1", port)
