"""A session worker as a process of its own, and reading back what it wrote: shared by the
worker tests (SIGKILL recovery, faults)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson

from aigq.dev.probe import free_port
from aigq.settings import KafkaSettings, TopicSettings
from shell.faults.state import latest_states
from streams.replay import KafkaSink, ReplaySettings, replay
from streams.session import Session


class Worker:
    """``python -m shell worker`` in a subprocess of its own, with its HTTP port."""

    def __init__(
        self,
        kafka: KafkaSettings,
        topics: TopicSettings,
        app_id: str,
        tmp: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.env = {
            **os.environ,
            "AIGQ_STREAM_RECENT_TRIGGERS": "false",  # on where a test says where Redis is
            "AIGQ_STREAM_HISTORY": "false",  # the same
            **(env or {}),
            "AIGQ_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "AIGQ_TOPICS_PREFIX": topics.prefix,
            "AIGQ_TOPICS_PARTITIONS": str(topics.partitions),
            "AIGQ_STREAM_APP_ID": app_id,
            "AIGQ_STREAM_DATA_DIR": str(tmp),
            "AIGQ_STREAM_SESSION_TIMEOUT_S": "6",
            "AIGQ_STREAM_MAX_EVENT_BYTES": "2048",
            "AIGQ_WEB_PORT": str(self.port),
        }
        self.log = tmp / f"worker-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, stderr: Path | None = None) -> None:
        """Start it, its output to :attr:`log` (stderr to ``stderr`` when given)."""
        with self.log.open("wb") as log, (stderr or self.log).open("ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "shell", "worker"], env=self.env, stdout=log, stderr=err
            )

    def get(self, path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except OSError:
            return 0, None

    def processed(self) -> int:
        status, body = self.get("/health")
        return int(orjson.loads(body)["processed"]) if status == 200 else 0

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=90)  # a clean stop commits and flushes: slow under load


def _produce(kafka: KafkaSettings, topics: TopicSettings, items: list[Any]) -> None:
    with KafkaSink(kafka, ReplaySettings(linger_ms=5)) as sink:
        replay(items, sink, topics)
        sink.flush()
        assert sink.failed == 0, sink.first_error


def _latest_states(kafka: KafkaSettings, topic: str) -> tuple[dict[str, Session], bool]:
    """The last state per user in a changelog, and whether versions only ever grew."""
    return latest_states(kafka, topic)
