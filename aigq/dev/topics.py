"""Create and describe topics with kafka-python's admin client."""

from __future__ import annotations

import time
from dataclasses import dataclass

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from aigq.errors import ServiceError
from aigq.kafka_clients import build
from aigq.settings import KafkaSettings


@dataclass(frozen=True)
class TopicState:
    name: str
    partitions: int | None  # None: does not exist
    created: bool = False


def _admin(kafka: KafkaSettings, timeout_s: float) -> KafkaAdminClient:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return build(
                KafkaAdminClient,
                f"Kafka at {kafka.bootstrap_servers}",
                **kafka.kafka_python_config(),
            )
        except ServiceError:  # the broker may still be starting
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.2)


def describe_topics(
    kafka: KafkaSettings, names: list[str], timeout_s: float = 10
) -> list[TopicState]:
    admin = _admin(kafka, timeout_s)
    try:
        return _describe(admin, names)
    finally:
        admin.close()


def ensure_topics(
    kafka: KafkaSettings,
    names: list[str],
    partitions: int,
    replication_factor: int,
    timeout_s: float = 10,
    configs: dict[str, str] | None = None,
) -> list[TopicState]:
    """Create the missing topics (with ``configs``, e.g. ``cleanup.policy=compact``); existing
    ones are left as they are (reported, not changed). The one place topics are made."""
    admin = _admin(kafka, timeout_s)
    try:
        existing = {t.name for t in _describe(admin, names) if t.partitions is not None}
        missing = [n for n in names if n not in existing]
        created: set[str] = set()
        for name in missing:
            try:
                topic = NewTopic(name, partitions, replication_factor, topic_configs=configs or {})
                admin.create_topics([topic])
                created.add(name)
            except TopicAlreadyExistsError:  # another `up` raced us: fine
                pass
            except KafkaError as exc:
                raise ServiceError(f"cannot create topic {name}: {exc}") from exc
        return [
            TopicState(t.name, t.partitions, t.name in created) for t in _describe(admin, names)
        ]
    finally:
        admin.close()


def _describe(admin: KafkaAdminClient, names: list[str]) -> list[TopicState]:
    try:
        listed = set(admin.list_topics())
        present = [n for n in names if n in listed]
        described = {d["name"]: len(d["partitions"]) for d in admin.describe_topics(present)}
    except KafkaError as exc:
        raise ServiceError(f"cannot describe topics: {exc}") from exc
    return [TopicState(n, described.get(n)) for n in names]
