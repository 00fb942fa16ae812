"""Faust plumbing the session worker and its benchmark share: broker options, the group's
committed offsets, and running an app's worker in this process."""

from __future__ import annotations

from typing import Any

import faust
from faust.types import TP

from aigq.errors import ServiceError
from aigq.settings import KafkaSettings


def faust_broker_options(kafka: KafkaSettings) -> dict[str, Any]:
    """``faust.App`` keyword arguments that reach the cluster ``kafka`` describes."""
    options: dict[str, Any] = {
        "broker": ";".join(f"kafka://{host}:{port}" for host, port in kafka.servers),
        "broker_request_timeout": kafka.request_timeout_ms / 1000,
    }
    context = kafka.ssl_context()
    if kafka.security_protocol.startswith("SASL_"):
        assert kafka.sasl_mechanism and kafka.sasl_username and kafka.sasl_password
        options["broker_credentials"] = faust.SASLCredentials(
            username=kafka.sasl_username,
            password=kafka.sasl_password.get_secret_value(),
            mechanism=kafka.sasl_mechanism,
            ssl_context=context,
        )
    elif context is not None:
        options["broker_credentials"] = faust.SSLCredentials(context)
    return options


async def committed_offsets(kafka: KafkaSettings, group: str, tps: set[TP]) -> dict[TP, int]:
    """The group's committed offsets of ``tps`` (those it has one for), from the broker."""
    if not tps:
        return {}
    from aiokafka import TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError

    admin = AIOKafkaAdminClient(**kafka.aiokafka_config())
    try:
        await admin.start()
        got = await admin.list_consumer_group_offsets(
            group, partitions=[TopicPartition(tp.topic, tp.partition) for tp in tps]
        )
    except KafkaError as exc:
        raise ServiceError(f"cannot read the committed offsets of {group}: {exc}") from exc
    finally:
        await admin.close()
    return {TP(tp.topic, tp.partition): meta.offset for tp, meta in got.items() if meta.offset >= 0}


def run_app(app: faust.App) -> None:
    """Run a Faust app's worker in this process until SIGTERM/SIGINT; exit 0 is a clean stop.

    The logging stays as the command configured it. Faust's own set-up would replace it and,
    for the terminal spinner it drives from log records, put the root logger at DEBUG: every
    debug call in aiokafka then builds a record (measured: ~3% of the session agent's time).
    """
    worker = faust.Worker(app, override_logging=False, quiet=True, redirect_stdouts=False)
    worker.spinner = None
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:  # mode's worker always ends in SystemExit
        if exc.code not in (0, None):
            raise
