"""``aigq bench serve``: the read API under load, against raw Redis GETs, in one run.

1. Load ``users`` users' entries (u2q runs, recent triggers; an x2q index; popular queries)
   under a fresh key prefix (:mod:`cache.bench_data`).
2. Start ``aigq serve`` with ``workers`` uvicorn workers on a free loopback port, as a
   process of its own, and wait for ``/readyz``.
3. Each measurement runs in a separate load-generator process (:mod:`cache.loadgen`), one
   after the other, over ``connections`` keep-alive connections; the last three run
   round-robin ``rounds`` times and their medians are reported (this machine's speed drifts,
   and other work shares its two cores):
   - ``ceiling``: the generator against a trivial canned-response server (its own ceiling);
   - ``api_rate``: the API at a fixed request rate: p50/p99 latency and achieved rate;
   - ``api_max``: the API closed-loop: its throughput;
   - with more than one of ``servers`` (``AIGQ_SERVE_SERVER``), ``api_rate <server>`` and
     ``api_max <server>`` for each other one, in the same rounds (all the servers are up, the
     ones not measured idle);
   - ``redis_get``: plain Redis GETs of a same-sized value through ``redis.asyncio`` with the
     same concurrency: the raw throughput the API is compared with.
4. Stop the servers and delete the keys.

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
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aigq.dev.probe import free_port, wait_until
from aigq.errors import AigqError
from aigq.redis_clients import open_redis
from aigq.settings import RedisSettings
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


@dataclass(frozen=True)
class Phase:
    name: str
    result: dict[str, Any]
    server_cpu_s: float
    redis_cpu_s: float
    steal: float  # the machine's CPU time taken by the hypervisor, as a share of the phase's


@dataclass(frozen=True)
class BenchReport:
    config: BenchConfig
    load_s: float
    phases: dict[str, list[Phase]]  # each phase's runs, in order
    sample: dict[str, Any]  # one response, to show what was served

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
        return _measure(redis, config, data, load_s, log)
    finally:
        log(f"deleted {asyncio.run(clean()):,} keys")


def _measure(
    redis: RedisSettings,
    config: BenchConfig,
    data: bench_data.BenchData,
    load_s: float,
    log: Callable[[str], None],
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

    def phase(name: str, spec: dict[str, Any], server_pid: int | None) -> None:
        time.sleep(config.pause_s)
        cpu0 = _tree_cpu_s(server_pid) if server_pid else 0.0
        redis0 = _redis_cpu_s(redis.url)
        steal0, all0 = _machine_ticks()
        result = _loadgen(common | spec, timeout)
        steal1, all1 = _machine_ticks()
        server_cpu = _tree_cpu_s(server_pid) - cpu0 if server_pid else 0.0
        steal = (steal1 - steal0) / (all1 - all0) if all1 > all0 else 0.0
        run = Phase(name, result, server_cpu, _redis_cpu_s(redis.url) - redis0, steal)
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
    ports = {server: port if server == first else free_port() for server in config.servers}
    with contextlib.ExitStack() as servers:
        pids = {}
        for server, at in ports.items():
            log(f"starting aigq serve ({server}) with {config.workers} worker(s) on port {at} ...")
            pids[server] = servers.enter_context(
                _process(
                    [sys.executable, "-m", "shell", "serve"],
                    env | {"AIGQ_SERVE_SERVER": server, "AIGQ_SERVE_PORT": str(at)},
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
        for n in range(config.rounds):  # round-robin: this machine's speed drifts
            log(f"round {n + 1} of {config.rounds}")
            phase("api_rate", {"job": "http_rate", "port": port, "rate": config.rate}, pids[first])
            phase("api_max", {"job": "http_max", "port": port}, pids[first])
            for server in others:  # the others idle meanwhile, as the API does below
                at = ports[server]
                rate = {"job": "http_rate", "port": at, "rate": config.rate}
                phase(f"api_rate {server}", rate, pids[server])
                phase(f"api_max {server}", {"job": "http_max", "port": at}, pids[server])
            phase("redis_get", raw, None)  # the servers idle meanwhile
    return BenchReport(config, load_s, phases, sample)
