"""Build kafka-python clients without leaking sockets when the broker cannot be reached.

kafka-python 3 creates its network client inside the producer's, consumer's or admin client's
constructor; when bootstrapping then fails, the constructor raises and that network client
(its sockets and wake-up pipe) is left open with nothing to close it by. ``build`` passes a
``kafka_client`` factory that remembers what it made and closes it on failure, then translates
the error into :class:`~aigq.errors.ServiceError`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from kafka.errors import KafkaError
from kafka.net.compat import KafkaNetClient

from aigq.errors import ServiceError

C = TypeVar("C")


def build(kind: Callable[..., C], what: str, **config: Any) -> C:
    """``kind(**config)`` (KafkaProducer, KafkaAdminClient, ...) or ServiceError naming ``what``."""
    made: list[KafkaNetClient] = []

    def network_client(**kwargs: Any) -> KafkaNetClient:
        client = KafkaNetClient(**kwargs)
        made.append(client)
        return client

    try:
        return kind(**config, kafka_client=network_client)
    except KafkaError as exc:
        for client in made:
            client.close()
        raise ServiceError(f"{what} does not answer: {type(exc).__name__}: {exc}") from exc
