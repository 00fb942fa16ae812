"""Announcing a model version on ``<prefix>.models``, and rolling back to an earlier one.

A trainer publishes a version in the registry, then calls :func:`announce`; every generator's
watcher (:mod:`generators.reload`) swaps to it. ``aigq model rollback NAME`` points the
registry's LATEST back at an earlier published version (:meth:`Registry.set_latest`) and
announces that one with reason ``rollback``: one command, and the generators follow without a
restart (a generator started later resolves LATEST, so it agrees).

Announcements are keyed by model name, so all of a model's land in one partition, in order.
The Kafka client is imported when one is sent: the trainer's role imports this module.
"""

from __future__ import annotations

import json
import time
from typing import Any, Literal

from pydantic import ValidationError

from aigq.codec import encode
from aigq.errors import RegistryError, ServiceError
from aigq.events import ModelAnnouncement, ModelKind
from aigq.registry import ModelRef, Registry
from aigq.settings import KafkaSettings, TopicSettings

ADAPTER_CONFIG = "adapter_config.json"  # what peft writes beside a LoRA adapter's weights


def announce(kafka: KafkaSettings, topics: TopicSettings, announcement: ModelAnnouncement) -> None:
    """Send ``announcement`` to ``<prefix>.models`` and wait until the broker has it.

    Raises ServiceError when the broker cannot be reached or does not acknowledge it: the
    version is published all the same, and ``aigq model announce NAME@VERSION`` announces it
    again.
    """
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    from aigq.kafka_clients import build

    topic = topics.name("models")
    producer: Any = build(
        KafkaProducer,
        f"Kafka at {kafka.bootstrap_servers}",
        **kafka.kafka_python_config(),
        acks="all",
        enable_idempotence=False,  # tansu (and some managed clusters) refuse it
        retries=3,
        max_block_ms=kafka.request_timeout_ms,
    )
    try:
        future = producer.send(topic, key=announcement.name.encode(), value=encode(announcement))
        future.get(timeout=kafka.request_timeout_ms / 1000)
    except KafkaError as exc:
        raise ServiceError(f"{announcement.tag} not announced on {topic}: {exc!r}") from exc
    finally:
        producer.close(timeout=5)


def announcement_for(
    ref: ModelRef,
    kind: ModelKind = "generator",
    reason: Literal["publish", "rollback"] = "publish",
    ts: int | None = None,
) -> ModelAnnouncement:
    """The announcement of a registry version: a folder with ``adapter_config.json`` is a
    LoRA adapter over the base that file names."""
    config = ref.path / ADAPTER_CONFIG
    base = ""
    if config.is_file():
        try:
            base = str(json.loads(config.read_text()).get("base_model_name_or_path") or "")
        except (OSError, ValueError, AttributeError) as exc:
            raise RegistryError(f"{ref.tag}: unreadable {ADAPTER_CONFIG}") from exc
    try:
        return ModelAnnouncement(
            kind=kind,
            name=ref.name,
            version=ref.version,
            path=str(ref.path),
            adapter=config.is_file(),
            base=base,
            reason=reason,
            ts=ts if ts is not None else int(time.time() * 1000),
        )
    except ValidationError as exc:  # a path over MAX_PATH_CHARS, say
        raise RegistryError(f"{ref.tag} cannot be announced: {exc}") from exc


def rollback_target(versions: list[str], current: str, to: str | None = None) -> str:
    """The version a rollback makes LATEST: ``to`` if given, else the newest published
    version older than ``current``. ``versions``: the published ones, oldest first."""
    if to is not None:
        if to not in versions:
            raise RegistryError(f"{to} is not a published version ({', '.join(versions)})")
        if to == current:
            raise RegistryError(f"{to} is LATEST already (aigq model announce re-announces it)")
        return to
    if current not in versions:
        raise RegistryError(f"LATEST ({current or 'none'}) is not a published version")
    older = versions[: versions.index(current)]
    if not older:
        raise RegistryError(f"nothing to roll back to: {current} is the oldest version")
    return older[-1]


def rollback(registry: Registry, name: str, to: str | None = None) -> ModelRef:
    """Point ``name``'s LATEST at an earlier version (:func:`rollback_target`); the caller
    announces it."""
    latest = registry.latest(name)
    current = latest.version if latest is not None else ""
    target = rollback_target(registry.versions(name), current, to)
    return registry.set_latest(name, target)
