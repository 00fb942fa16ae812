"""``aigq bench x2q``: the x2q build's throughput per backend, and reads across its switch.

One run, side by side, on the same triggers (a log's most seen of its last ``days``):

1. **transformers**: :func:`generators.x2q_build.build_index` with the Think model in this
   process, into Redis under a throwaway prefix;
2. **vllm-http**: the same build with the model on a vLLM server on the CPU (started from
   ``.venv-vllm``; skipped, and said so, without one);

each timed whole (generation, MiniLM scoring, Redis writes, the switch): triggers/s, the model
calls' share, coverage, and the ratio of the two. While the last build switches, readers call
:meth:`cache.hints.HintClient.hints` in a loop for users whose recent triggers are all in the
index, and count the reads that mixed two versions (a version is told by its queries: every
trigger's list is tagged with the build that wrote it): the figure the issue asks to be 0.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from aigq.cli_kit import console
from aigq.redis_clients import delete_prefix, open_redis
from aigq.settings import RedisSettings, load


@dataclass
class Arm:
    backend: str
    triggers: int = 0
    covered: int = 0
    seconds: float = 0.0
    model_seconds: float = 0.0
    skipped: str = ""

    @property
    def per_s(self) -> float:
        return self.triggers / self.seconds if self.seconds > 0 else 0.0


async def _build(backend_name: str, base_url: str, folder: str, tag: str, triggers: list[Any],
                 popularity: Any, redis: RedisSettings, prefix: str) -> Arm:  # fmt: skip
    from cache.x2q import X2QStore
    from generators.x2q_build import Checkpoint, build_index
    from generators.x2q_settings import X2QSettings

    settings = X2QSettings(backend=backend_name, base_url=base_url)
    model = tag if backend_name == "vllm-http" else folder
    client = open_redis(redis)
    try:
        async with settings.open_backends(model, tag) as (backend, retry):
            report = await build_index(
                triggers, popularity, backend, X2QStore(client, prefix), Checkpoint(client, prefix),
                settings.build_config(tag), retry=retry,
            )  # fmt: skip
    finally:
        await client.aclose()
    return Arm(backend_name, report.triggers, report.covered, report.seconds, report.model_seconds)


async def _switch_reads(redis: RedisSettings, prefix: str, switches: int) -> tuple[int, int, int]:
    """(reads, mixed reads, switches) of readers running while versions A and B alternate."""
    from cache.hints import HintClient
    from cache.recent import RecentTriggers
    from cache.settings import HintSettings
    from cache.x2q import X2QStore

    client = open_redis(redis)
    store = X2QStore(client, prefix)
    now = int(time.time() * 1000)
    items = [f"sku-{i}" for i in range(200)]
    await RecentTriggers(client, prefix).record_many(
        [
            (f"user-{u}", "item", items[(u * 5 + j) % 200], now - j)
            for u in range(40)
            for j in range(5)
        ]
    )
    stop = asyncio.Event()
    reads = mixed = 0
    settings = redis.model_copy(update={"key_prefix": prefix})

    async def reader(user: int) -> None:
        nonlocal reads, mixed
        async with HintClient(settings, HintSettings(history=0)) as hints:
            while not stop.is_set():
                got = await hints.hints(f"user-{user % 40}", k=10)
                tags = {h.query.split("-")[0] for h in got.hints if h.source == "x2q"}
                reads += 1
                mixed += len(tags) > 1

    try:
        tasks = [asyncio.create_task(reader(u)) for u in range(8)]
        for n in range(switches):
            tag = "a" if n % 2 == 0 else "b"
            version = await store.begin()
            await store.write_many([("item", i, [f"{tag}-{i}-0", f"{tag}-{i}-1"]) for i in items],
                                   version)  # fmt: skip
            await store.switch(version)
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.gather(*tasks)
    finally:
        await client.aclose()
        await delete_prefix(redis, prefix)
    return reads, mixed, switches


def bench_x2q_command(
    data_dir: Annotated[Path, typer.Option(help="holds aol/")] = Path("../shared/data"),
    days: Annotated[int, typer.Option(min=1, help="the log's last N days")] = 1,
    triggers: Annotated[int, typer.Option(min=1, help="the most seen N triggers")] = 500,
    vllm: Annotated[bool, typer.Option(help="also the vllm-http arm (vLLM on the CPU)")] = True,
    switches: Annotated[int, typer.Option(min=2, help="switches under concurrent reads")] = 40,
) -> None:
    """The x2q build's triggers/s in process and on a vLLM server, and reads across switches."""
    from aigq.datasets.base import Malformed
    from aigq.datasets.sources import open_source
    from aigq.registry import Registry
    from generators.vllm_server import start_vllm_server, stop_vllm_server, vllm_python
    from generators.x2q_triggers import DAY_MS, collect, window

    redis = load(RedisSettings)
    ref = Registry().resolve("aigq-think")
    events = [e for e in open_source("aol", data_dir=data_dir) if not isinstance(e, Malformed)]
    end = max(e.ts for e in events) // DAY_MS * DAY_MS + DAY_MS
    seen, popularity = collect(events, *window(end, days))
    chosen = seen[:triggers]
    console.print(f"{len(chosen):,} of the {len(seen):,} triggers of the last {days} days; "
                  f"Think model {ref.tag}", highlight=False)  # fmt: skip
    arms: list[Arm] = []
    prefix = f"benchx2q{uuid.uuid4().hex[:8]}:"
    arms.append(asyncio.run(_build("transformers", "", str(ref.path), ref.tag, chosen,
                                   popularity, redis, prefix + "t:")))  # fmt: skip
    if vllm and vllm_python() is not None:
        log = Path(".aigq") / "bench-x2q" / "vllm.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        proc, url, startup = start_vllm_server(ref.path, log, served_name=ref.tag)
        console.print(f"vLLM (CPU) up in {startup:.0f} s", highlight=False)
        try:
            arms.append(asyncio.run(_build("vllm-http", url, str(ref.path), ref.tag, chosen,
                                           popularity, redis, prefix + "v:")))  # fmt: skip
        finally:
            stop_vllm_server(proc)
    else:
        arms.append(Arm("vllm-http", skipped="no vLLM environment (or --no-vllm)"))
    reads, mixed, done = asyncio.run(_switch_reads(redis, prefix + "s:", switches))
    asyncio.run(delete_prefix(redis, prefix))
    table = Table(title=f"aigq bench x2q: {len(chosen):,} triggers, {ref.tag}")
    for column in ("backend", "covered", "seconds", "triggers/s", "model calls", "vs transformers"):
        table.add_column(column, justify="right")
    base = arms[0].per_s
    for arm in arms:
        if arm.skipped:
            table.add_row(arm.backend, "-", "-", "-", "-", arm.skipped)
            continue
        table.add_row(
            arm.backend, f"{arm.covered / max(arm.triggers, 1):.1%}", f"{arm.seconds:.1f}",
            f"{arm.per_s:.1f}", f"{arm.model_seconds / max(arm.seconds, 1e-9):.0%}",
            f"{arm.per_s / base:.2f}x" if base else "-",
        )  # fmt: skip
    console.print(table)
    console.print(f"switch under reads: {done} switches, {reads:,} reads by 8 readers, "
                  f"{mixed} mixed (goal 0)", highlight=False)  # fmt: skip
