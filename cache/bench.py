"""``aigq bench serve``: the read API under load, against raw Redis GETs, in one run.

1. Load ``users`` users' entries (u2q runs, recent triggers; an x2q index; popular queries)
   under a fresh key prefix (:mod:`cache.bench_data`).
2. Start ``aigq serve`` with ``workers`` uvicorn workers on a free loopback port, as a
   process of its own, and wait for ``/readyz``.
3. Each measurement runs in a separate load-generator process (:mod:`cache.loadgen`), one
   after the other, over ``connections`` keep-alive connections; the last three run
   round-robin ``rounds`` times, the API servers in reverse order every other round, and
   their medians are reported (this machine's speed drifts, and other work shares its two
   cores):
   - ``ceiling``: the generator against a trivial canned-response server (its own ceiling);
   - ``api_rate``: the API at a fixed request rate: p50/p99 latency and achieved rate;
   - ``api_max``: the API closed-loop: its throughput;
   - with more than one of ``servers`` (``AIGQ_SERVE_SERVER``), ``api_rate <server>`` and
     ``api_max <server>`` for each other one, in the same rounds (all the servers are up, the
     ones not measured idle);
   - with ``exposures``, ``api_rate exposures`` and ``api_max exposures``: the first server
     again, with exposure logging on (``AIGQ_SERVE_LOG_EXPOSURES``, issue 19) against a
     throwaway tansu broker (:class:`aigq.dev.stack.DevStack` on a free port), so that the
     read path with and without the log is measured in the same rounds; afterwards its
     ``/metrics`` say how many lists were sent to Kafka and how many dropped, and why;
   - ``redis_get``: plain Redis GETs of a same-sized value through ``redis.asyncio`` with the
     same concurrency: the raw throughput the API is compared with.
4. Stop the servers (and the broker) and delete the keys.

CPU seconds of the generator, the server (all its processes) and Redis are recorded per
phase: on a 2-core machine they share the cores, and the figures say how. So is the share of
the machine's CPU time the hypervisor kept for others ("steal", from ``/proc/stat``): seen
here, it climbs from ~0 to 30-60 % after a minute of full load, and every rate of a phase
with high steal is low, so the ratio is taken per round, between two neighbouring phases.
Goals (issue 5): p99 <= 5 ms at 2,000 req/s; api_max >= 0.5 x redis_get.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from aigq.dev.probe import free_port, wait_until
from aigq.dev.stack import DevSettings, DevStack
from aigq.errors import AigqError
from aigq.redis_clients import open_redis
from aigq.settings import KafkaSettings, RedisSettings, TopicSettings
from cache import bench_data

_TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class BenchConfig:
    users: int = 100_000
    rate: float = 2_000.0
    duration_s: float = 10.0
    warmup_s: float = 2.0
    connections: int = 32
    workers: int = 1
    k: int = 10
    unknown_every: int = 20  # one request in 20 for a user with no entries (the fallback path)
    rounds: int = 3  # the API and Redis phases run round-robin this many times; medians count
    pause_s: float = 0.0  # idle seconds before each phase (see the module docstring)
    # AIGQ_SERVE_SERVER of the API processes: the first is "the API" (phases api_rate, api_max);
    # each other one runs beside it, its phases named "api_rate <server>", "api_max <server>"
    servers: tuple[str, ...] = ("uvicorn",)
    # also run the first server with exposure logging on, against a throwaway broker
    exposures: bool = False


EXPOSURES = "exposures"  # the label of that server's phases: "api_rate exposures", ...


@dataclass(frozen=True)
class Phase:
    name: str
    result: dict[str, Any]
    server_cpu_s: float
    redis_cpu_s: float
    steal: float  # the machine's CPU time taken by the hypervisor, as a share of the phase's
    broker_cpu_s: float = 0.0  # the throwaway broker's (exposure logging only)


@dataclass(frozen=True)
class BenchReport:
    config: BenchConfig
    load_s: float
    phases: dict[str, list[Phase]]  # each phase's runs, in order
    sample: dict[str, Any]  # one response, to show what was served
    # with exposures: the logging server's counters at the end, from its /metrics
    # (serve_exposures by outcome, plus "lists": the non-empty lists it served)
    exposure_counts: dict[str, int] | None = None

    def median(self, name: str, field: str) -> float:
        return float(statistics.median(p.result[field] for p in self.phases[name]))

    def median_cpu(self, name: str) -> tuple[float, float, float, float]:
        """Median CPU seconds of the generator, the API and Redis, and the median steal."""
        runs = self.phases[name]
        return (
            statistics.median(p.result["cpu_s"] for p in runs),
            statistics.median(p.server_cpu_s for p in runs),
            statistics.median(p.redis_cpu_s for p in runs),
            statistics.median(p.steal for p in runs),
        )

    def ratios(self) -> list[float]:
        """API flat out / raw GET, per round (the two ran one after the other)."""
        pairs = zip(self.phases["api_max"], self.phases["redis_get"], strict=True)
        return [api.result["rate"] / raw.result["rate"] for api, raw in pairs]

    def ratio(self) -> float:
        return float(statistics.median(self.ratios()))

    def server_ratio(self, server: str) -> float:
        """``server`` flat out / the first server flat out: the median of the rounds' ratios
        (the two ran one after the other in each round)."""
        pairs = zip(self.phases[f"api_max {server}"], self.phases["api_max"], strict=True)
        return float(statistics.median(a.result["rate"] / b.result["rate"] for a, b in pairs))


def _tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of a process and all its descendants."""
    total, stack = 0.0, [pid]
    while stack:
        p = stack.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / _TICK
            children = Path(f"/proc/{p}/task/{p}/children").read_text()
            stack.extend(int(c) for c in children.split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def _machine_ticks() -> tuple[int, int]:
    """(steal, all) CPU ticks of the whole machine so far, from ``/proc/stat``'s cpu line."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    steal = fields[7] if len(fields) > 7 else 0
    return steal, sum(fields[:8])  # guest time is already counted in user


def _redis_cpu_s(url: str) -> float:
    async def read() -> float:
        async with open_redis(RedisSettings(url=url)) as client:
            info = await client.info("cpu")
        return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])

    return asyncio.run(read())


def _loadgen(spec: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "cache.loadgen", json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if proc.returncode != 0:
        raise AigqError(f"load generator {spec['job']} failed: {proc.stderr.strip()[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _get(url: str, timeout_s: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()
    except OSError:
        return 0, b""


@contextmanager
def _process(cmd: list[str], env: dict[str, str], ready: Callable[[], bool]) -> Iterator[int]:
    """Run ``cmd`` until the block ends (SIGTERM, then SIGKILL); yield its PID once ready."""
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        if not wait_until(lambda: proc.poll() is not None or ready(), 60):
            raise AigqError(f"{cmd[2:]} did not get ready within 60 s")
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise AigqError(f"{cmd[2:]} exited with {proc.returncode}: {err[-2000:]}")
        yield proc.pid
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def _answers(url: str) -> Callable[[], bool]:
    """A readiness probe: ``url`` answers 200."""
    return lambda: _get(url)[0] == 200


@contextmanager
def _broker(enabled: bool, log: Callable[[str], None]) -> Iterator[DevStack | None]:
    """A throwaway tansu broker with its topics (None when not ``enabled``), stopped after."""
    if not enabled:
        yield None
        return
    run_id = uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory(prefix="aigq-bench-serve-") as tmp:
        stack = DevStack(
            KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}"),
            RedisSettings(),  # not started: start_redis is off, and the bench has its Redis
            TopicSettings(prefix=f"benchserve{run_id}", partitions=4),
            DevSettings(state_dir=Path(tmp), start_redis=False),
        )
        log(f"starting a throwaway broker on {stack.kafka.bootstrap_servers} ...")
        try:
            stack.up()
            yield stack
        finally:
            stack.down()


def _exposure_counts(port: int) -> dict[str, int]:
    """The logging server's exposure counters, and the non-empty lists it served."""
    status, body = _get(f"http://127.0.0.1:{port}/metrics")
    if status != 200:
        raise AigqError(f"/metrics of the exposure-logging server answered {status}")
    counts: dict[str, int] = {}
    ok = empty = 0
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == "aigq_serve_exposures_total":
                counts[sample.labels["outcome"]] = int(sample.value)
            elif sample.name == "aigq_serve_requests_total" and sample.labels["outcome"] == "ok":
                ok = int(sample.value)
            elif sample.name == "aigq_serve_fallbacks_total":
                empty += int(sample.value) if sample.labels["kind"] == "none_available" else 0
    return counts | {"lists": ok - empty}


def run_bench(redis: RedisSettings, config: BenchConfig, log: Callable[[str], None]) -> BenchReport:
    prefix = f"bench:serve:{uuid.uuid4().hex[:8]}:"
    data = bench_data.BenchData(prefix, config.users)

    async def load() -> float:
        async with open_redis(redis) as client:
            return await bench_data.load(client, data)

    async def clean() -> int:
        async with open_redis(redis) as client:
            return await bench_data.delete(client, prefix)

    try:
        log(f"loading {config.users:,} users under {prefix} ...")
        load_s = asyncio.run(load())
        log(f"loaded in {load_s:.1f} s")
        with _broker(config.exposures, log) as stack:
            return _measure(redis, config, data, load_s, log, stack)
    finally:
        log(f"deleted {asyncio.run(clean()):,} keys")


def _measure(
    redis: RedisSettings,
    config: BenchConfig,
    data: bench_data.BenchData,
    load_s: float,
    log: Callable[[str], None],
    stack: DevStack | None = None,
) -> BenchReport:
    port = free_port()
    env = os.environ | {
        "AIGQ_REDIS_KEY_PREFIX": data.prefix,
        "AIGQ_REDIS_URL": redis.url,
        "AIGQ_SERVE_BIND": "127.0.0.1",
        "AIGQ_SERVE_PORT": str(port),
        "AIGQ_SERVE_WORKERS": str(config.workers),
        "AIGQ_LOG_LEVEL": "WARNING",
    }
    env.pop("AIGQ_SERVE_API_KEYS", None)
    common = {
        "host": "127.0.0.1",
        "connections": config.connections,
        "warmup_s": config.warmup_s,
        "duration_s": config.duration_s,
        "users": config.users,
        "user_prefix": data.user_prefix,
        "unknown_every": config.unknown_every,
        "k": config.k,
    }
    timeout = config.warmup_s + config.duration_s + 60
    phases: dict[str, list[Phase]] = {}

    broker_pid = stack.broker_process.pid() if stack is not None else None

    def phase(name: str, spec: dict[str, Any], server_pid: int | None) -> None:
        time.sleep(config.pause_s)
        cpu0 = _tree_cpu_s(server_pid) if server_pid else 0.0
        broker0 = _tree_cpu_s(broker_pid) if broker_pid else 0.0
        redis0 = _redis_cpu_s(redis.url)
        steal0, all0 = _machine_ticks()
        result = _loadgen(common | spec, timeout)
        steal1, all1 = _machine_ticks()
        server_cpu = _tree_cpu_s(server_pid) - cpu0 if server_pid else 0.0
        broker_cpu = _tree_cpu_s(broker_pid) - broker0 if broker_pid else 0.0
        steal = (steal1 - steal0) / (all1 - all0) if all1 > all0 else 0.0
        redis_cpu = _redis_cpu_s(redis.url) - redis0
        run = Phase(name, result, server_cpu, redis_cpu, steal, broker_cpu)
        phases.setdefault(name, []).append(run)
        log(f"{name}: {result['rate']:,.0f}/s, p50 {result['p50_ms']:.2f} ms, "
            f"p99 {result['p99_ms']:.2f} ms, statuses {result['statuses']}, "
            f"steal {steal:.0%}")  # fmt: skip

    canned_port = free_port()
    log("load generator ceiling (canned server) ...")
    with _process(
        [
            sys.executable,
            "-m",
            "cache.loadgen",
            json.dumps({"job": "canned", "host": "127.0.0.1", "port": canned_port}),
        ],
        env,
        _answers(f"http://127.0.0.1:{canned_port}/"),
    ) as canned_pid:
        phase("ceiling", {"job": "http_max", "port": canned_port}, canned_pid)

    first, *others = config.servers
    # label -> the variables of that API process: each server, and the first one logging
    variants = {server: {"AIGQ_SERVE_SERVER": server} for server in config.servers}
    if stack is not None:
        variants[EXPOSURES] = {
            "AIGQ_SERVE_SERVER": first,
            "AIGQ_SERVE_LOG_EXPOSURES": "true",
            "AIGQ_KAFKA_BOOTSTRAP_SERVERS": stack.kafka.bootstrap_servers,
            "AIGQ_TOPICS_PREFIX": stack.topics.prefix,
        }
        others.append(EXPOSURES)
    ports = {label: port if label == first else free_port() for label in variants}
    with contextlib.ExitStack() as servers:
        pids = {}
        for label, at in ports.items():
            log(f"starting aigq serve ({label}) with {config.workers} worker(s) on port {at} ...")
            pids[label] = servers.enter_context(
                _process(
                    [sys.executable, "-m", "shell", "serve"],
                    env | variants[label] | {"AIGQ_SERVE_PORT": str(at)},
                    _answers(f"http://127.0.0.1:{at}/readyz"),
                )
            )
        samples = {}
        for server, at in ports.items():
            url = f"http://127.0.0.1:{at}/v1/hints/{data.user(0)}?k={config.k}"
            status, body = _get(url)
            if status != 200:
                raise AigqError(f"sample request ({server}) answered {status}: {body[:500]!r}")
            samples[server] = json.loads(body)
        if any(answer["hints"] != samples[first]["hints"] for answer in samples.values()):
            raise AigqError(f"the servers served the sample request differently: {samples}")
        sample = samples[first]
        raw = {"job": "redis_get", "redis_url": redis.url, "key_prefix": data.raw_prefix}
        labels = [first, *others]
        for n in range(config.rounds):  # round-robin: this machine's speed drifts
            log(f"round {n + 1} of {config.rounds}")
            # every other round in reverse, so that no server always runs in another's wake;
            # the ones not measured idle meanwhile, as they all do during redis_get
            for label in labels if n % 2 == 0 else labels[::-1]:
                at, suffix = ports[label], "" if label == first else f" {label}"
                rate = {"job": "http_rate", "port": at, "rate": config.rate}
                phase(f"api_rate{suffix}", rate, pids[label])
                phase(f"api_max{suffix}", {"job": "http_max", "port": at}, pids[label])
            phase("redis_get", raw, None)
        counts = None
        if stack is not None:
            time.sleep(1.0)  # the sender drains its buffer within milliseconds
            counts = _exposure_counts(ports[EXPOSURES])
    return BenchReport(config, load_s, phases, sample, counts)
