"""The whole nearline loop on one machine, each part a process of its own, stopped together.

:class:`ModelServer` is the generation backend: a vLLM server on the CPU from ``.venv-vllm``
(the default), or, when vLLM cannot start, the generator's in-process transformers backend.
:class:`Loop` is the rest: a throwaway tansu broker and its topics, Redis (the local one, or
one it starts), the session worker (``aigq worker``), the generator (``aigq generate``) and the
read API (``aigq serve``), configured through their own ``AIGQ_*`` variables, exactly as a
deployment would run them. Everything started is stopped on exit, Ctrl-C included; the
processes' logs stay in the state folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from aigq.codec import encode
from aigq.dev.probe import free_port, wait_until
from aigq.dev.process import ManagedProcess
from aigq.dev.stack import DevSettings, DevStack
from aigq.errors import ServiceError
from aigq.events import RegenerationRequest
from aigq.redis_clients import delete_prefix
from aigq.settings import KafkaSettings, RedisSettings, TopicSettings

CANARY_USER = "__aigq_e2e_canary__"


def http_status(url: str, timeout_s: float = 1.0) -> int | None:
    """The status of a GET, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return None


@dataclass
class ModelServer:
    """The generator's backend: where it is and how the generator reaches it."""

    model: Path
    model_version: str
    state_dir: Path
    backend: Literal["auto", "vllm-http", "transformers"] = "auto"
    proc: subprocess.Popen[bytes] | None = None
    url: str = ""
    startup_s: float = 0.0
    fallback_reason: str = ""

    def start(self) -> ModelServer:
        """Start vLLM (unless told to use transformers); fall back to transformers on "auto"."""
        if self.backend == "transformers" or self.url:
            return self  # transformers in the generator, or a server somebody else runs
        from generators.vllm_server import start_vllm_server

        self.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            # On a machine of a few cores vLLM would take them all and starve the stream.
            cores = os.cpu_count() or 1
            cpus = set(range(cores // 2)) if 2 <= cores <= 8 else None
            self.proc, self.url, self.startup_s = start_vllm_server(
                self.model, self.state_dir / "vllm.log", cpus=cpus
            )
        except ServiceError as exc:
            if self.backend == "vllm-http":
                raise
            self.fallback_reason = str(exc).splitlines()[0]
        return self

    @property
    def name(self) -> str:
        return "vllm-http" if self.url else "transformers"

    def generator_env(self) -> dict[str, str]:
        env = {"AIGQ_GENERATE_MODEL_VERSION": self.model_version}
        if self.url:
            env |= {"AIGQ_GENERATE_BACKEND": "vllm-http", "AIGQ_GENERATE_BASE_URL": self.url}
            env["AIGQ_GENERATE_MODEL"] = "aigq-direct"
        else:
            env |= {"AIGQ_GENERATE_BACKEND": "transformers", "AIGQ_GENERATE_MODEL": str(self.model)}
        return env

    def stop(self) -> None:
        if self.proc is not None:
            from generators.vllm_server import stop_vllm_server

            stop_vllm_server(self.proc)
            self.proc = None


@dataclass(frozen=True)
class LoopConfig:
    """How one run of the loop is set up (one prefix: topics, Redis keys, groups)."""

    state_dir: Path
    """PID files and the processes' logs"""
    prefix: str
    """topics are <prefix>.<kind>; Redis keys <prefix>:...; consumer groups <prefix>-..."""
    redis: RedisSettings
    partitions: int = 4
    policy: Literal["interest", "every_event"] = "interest"
    """the session worker's trigger policy"""
    flush_interval_s: float = 0.1
    """session flushes (requests go out at flushes)"""
    budget: Literal["none", "local", "shared"] = "none"
    """what pays for regenerations (AIGQ_STREAM_BUDGET; shared: cache.budget)"""
    max_regenerations_per_s: float = 0.0
    """budget local: the session worker's own cap"""
    order: Literal["priority", "fifo"] = "priority"
    """the generator's pending requests (AIGQ_GENERATE_ORDER)"""
    max_pending: int = 4096
    """requests the generator reads ahead (fifo with one batch: the generator before issue 17)"""
    batch_size: int = 64
    batch_wait_ms: int = 10
    max_in_flight: int = 2
    max_tokens: int = 48
    k: int = 10
    hints_timeout_ms: int = 100
    """the read API's deadline for one read (AIGQ_HINTS_TIMEOUT_MS): past it, a 503"""
    start_timeout_s: float = 180.0
    feedback: bool = False
    """the read API logs exposures and the user simulator (``aigq simulate``) clicks"""
    learn: bool = False
    """feedback, and models from a registry of the run's own (``<state_dir>/registry``) that
    a trainer publishes to (:mod:`shell.e2e.learn`)"""

    def __post_init__(self) -> None:
        if not self.prefix.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"prefix must be letters, digits, - and _: {self.prefix!r}")
        if self.flush_interval_s <= 0 or self.partitions < 1:
            raise ValueError("flush_interval_s must be > 0 and partitions >= 1")


class Loop:
    """Broker, worker, generator and API for one run; use it as a context manager."""

    def __init__(self, config: LoopConfig, model: ModelServer) -> None:
        self.config, self.model = config, model
        self.kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}")
        self.topics = TopicSettings(prefix=config.prefix, partitions=config.partitions)
        self.cache_prefix = f"{config.prefix}:"
        self.web_port, self.metrics_port, self.api_port = free_port(), free_port(), free_port()
        self.simulator_port = free_port()
        self.dev = DevStack(
            self.kafka, config.redis, self.topics, DevSettings(state_dir=config.state_dir)
        )
        feedback = config.feedback or config.learn
        names = ("worker", "generate", "serve", *(("simulate",) if feedback else ()))
        self.procs = {
            name: ManagedProcess(name, config.state_dir, marker=f"-m shell {name}")
            for name in names
        }

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def worker_metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}/metrics"

    @property
    def generator_metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def env(self) -> dict[str, str]:
        """The variables every process of this run gets (on top of the caller's own)."""
        c = self.config
        return {
            "AIGQ_KAFKA_BOOTSTRAP_SERVERS": self.kafka.bootstrap_servers,
            "AIGQ_TOPICS_PREFIX": c.prefix,
            "AIGQ_TOPICS_PARTITIONS": str(c.partitions),
            "AIGQ_REDIS_URL": c.redis.url,
            "AIGQ_REDIS_KEY_PREFIX": self.cache_prefix,  # every process's keys
            "AIGQ_LOG_LEVEL": os.environ.get("AIGQ_LOG_LEVEL", "WARNING"),
            # the session worker
            "AIGQ_STREAM_APP_ID": f"{c.prefix}-sessions",
            "AIGQ_STREAM_POLICY": c.policy,
            "AIGQ_STREAM_FLUSH_INTERVAL_S": str(c.flush_interval_s),
            "AIGQ_STREAM_BUDGET": c.budget,
            "AIGQ_STREAM_MAX_REGENERATIONS_PER_S": str(c.max_regenerations_per_s),
            "AIGQ_STREAM_SESSION_TIMEOUT_S": "6",  # tansu: a join waits half of it
            "AIGQ_STREAM_DATA_DIR": str(c.state_dir / "worker"),
            "AIGQ_STREAM_STORE": "memory",
            "AIGQ_WEB_PORT": str(self.web_port),
            # the generator
            "AIGQ_GENERATE_GROUP_ID": f"{c.prefix}-generate",
            "AIGQ_GENERATE_BATCH_SIZE": str(c.batch_size),
            "AIGQ_GENERATE_BATCH_WAIT_MS": str(c.batch_wait_ms),
            "AIGQ_GENERATE_MAX_IN_FLIGHT": str(c.max_in_flight),
            "AIGQ_GENERATE_ORDER": c.order,
            "AIGQ_GENERATE_MAX_PENDING": str(c.max_pending),
            "AIGQ_GENERATE_MAX_TOKENS": str(c.max_tokens),
            "AIGQ_GENERATE_K": str(c.k),
            "AIGQ_GENERATE_METRICS_PORT": str(self.metrics_port),
            # the read API
            "AIGQ_SERVE_PORT": str(self.api_port),
            "AIGQ_HINTS_TIMEOUT_MS": str(c.hints_timeout_ms),
            **self.model.generator_env(),
            **(self.feedback_env() if c.feedback or c.learn else {}),
            **(self.learn_env() if c.learn else {}),
        }

    def feedback_env(self) -> dict[str, str]:
        """Exposure logging and the user simulator."""
        return {
            "AIGQ_SERVE_LOG_EXPOSURES": "true",
            "AIGQ_SIMULATOR_GROUP_ID": f"{self.config.prefix}-simulate",
            "AIGQ_SIMULATOR_METRICS_PORT": str(self.simulator_port),
        }

    def learn_env(self) -> dict[str, str]:
        """The run's own model registry, the trainer's state and group."""
        c = self.config
        return {
            "AIGQ_MODEL_REGISTRY": str(c.state_dir / "registry"),
            "AIGQ_TRAINER_STATE_DIR": str(c.state_dir / "trainer"),
            "AIGQ_TRAINER_GROUP_ID": f"{c.prefix}-trainer",
        }

    def process_env(self) -> dict[str, str]:
        """The whole environment a process of this run starts with."""
        return {**os.environ, **self.env()}

    def __enter__(self) -> Loop:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Broker and topics, then the three processes; returns once each answers."""
        self.dev.up()
        env = self.process_env()
        for name in self.procs:
            self._spawn(name, env)
        timeout = self.config.start_timeout_s
        self._wait("worker", f"http://127.0.0.1:{self.web_port}/ready", timeout)
        self._wait("serve", f"{self.api_url}/readyz", timeout)
        self._wait("generate", self.generator_metrics_url, timeout)
        if "simulate" in self.procs:
            self._wait("simulate", f"http://127.0.0.1:{self.simulator_port}/metrics", timeout)
        self._canary(timeout)

    def _spawn(self, name: str, env: dict[str, str]) -> None:
        self.procs[name].start([sys.executable, "-m", "shell", name], env)

    def _wait(self, name: str, url: str, timeout_s: float) -> None:
        proc = self.procs[name]

        def up() -> bool:
            return proc.pid() is None or http_status(url) == 200

        wait_until(up, timeout_s, every_s=0.2)
        if proc.pid() is None or http_status(url) != 200:
            tail = proc.exited_early() or ""
            raise ServiceError(f"aigq {name} did not become ready at {url}:\n{tail[-1500:]}")

    def _canary(self, timeout_s: float, resend_s: float = 15.0) -> None:
        """Requests straight into ``<prefix>.regenerate`` until one's list is in Redis: the
        generator has joined its group, and backend and Redis work. One more request (a higher
        version) goes every ``resend_s``: a model may sample an unusable list for one, and
        output validation then writes nothing (a random-weight test model often does)."""
        key = f"{self.cache_prefix}u2q:{CANARY_USER}"

        def written() -> bool:
            if self.procs["generate"].pid() is None:
                return True
            return asyncio.run(_exists(self.config.redis, key))

        deadline = time.monotonic() + timeout_s
        version = 0
        while not written() and time.monotonic() < deadline:
            version += 1
            request = canary_request(version)
            asyncio.run(_send(self.kafka, self.topics.name("regenerate"), encode(request)))
            wait_until(written, min(resend_s, max(0.0, deadline - time.monotonic())), 0.5)
        if not asyncio.run(_exists(self.config.redis, key)):
            tail = self.procs["generate"].exited_early() or "(still running)"
            raise ServiceError(
                f"the generator wrote nothing for {version} canary requests within "
                f"{timeout_s:.0f} s: {tail}"
            )

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.stop(timeout_s=15)
        with contextlib.suppress(ServiceError, OSError):
            asyncio.run(delete_prefix(self.config.redis, self.cache_prefix))
        self.dev.down()


def canary_request(version: int) -> RegenerationRequest:
    """A regeneration request for the canary user (a higher ``version`` wins over a lower)."""
    now = int(time.time() * 1000)
    return RegenerationRequest(
        user_id=CANARY_USER, version=version, reason="cold_start", shift=1.0,
        event_ts=now, created_ts=now, fingerprint="canary",
        recent=((now, "search", "canary", ""),), profile=(("t:canary", 1.0),),
    )  # fmt: skip


async def _send(kafka: KafkaSettings, topic: str, value: bytes) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(**kafka.aiokafka_config(), enable_idempotence=False)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=CANARY_USER.encode())
    finally:
        await producer.stop()


async def _exists(redis: RedisSettings, key: str) -> bool:
    from aigq.redis_clients import open_redis

    client = open_redis(redis)
    try:
        return bool(await client.exists(key))
    finally:
        await client.aclose()


ARMS: dict[str, dict[str, object]] = {
    # issue 17: one shared budget that follows the generators, priority in the generator
    "shared": {"budget": "shared", "order": "priority"},
    # the loop before it: every trigger fires, the generator serves in arrival order and reads
    # ahead one micro-batch (the queue is in Kafka)
    "fifo": {"budget": "none", "order": "fifo", "max_pending": 64},
    # regenerate on every behaviour, within the shared budget
    "every_event": {"policy": "every_event", "budget": "shared", "order": "priority"},
}


def arm_config(base: LoopConfig, name: str, **changes: object) -> LoopConfig:
    """``base`` for another arm: its own prefix (topics, keys, groups) and state folder."""
    prefix = f"{base.prefix}-{name.replace('_', '-')}"
    return replace(base, prefix=prefix, state_dir=base.state_dir / name, **changes)  # type: ignore[arg-type]
