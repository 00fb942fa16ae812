"""The generation subsystem's commands: ``aigq generate`` and ``aigq bench generate``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from aigq.cli_kit import console, fails_cleanly, goal_line
from aigq.dev.stack import DevSettings, DevStack
from aigq.registry import DEFAULT_NAME, Registry
from aigq.settings import KafkaSettings, RedisSettings, TopicSettings, load
from aigq.stats import percentile
from generators.settings import GeneratorSettings


def _local_model(settings: GeneratorSettings) -> GeneratorSettings:
    """For the in-process backends, a model that is not a folder is a registry name.

    So ``aigq generate`` with the transformers or vllm backend loads the registry's latest
    ``aigq-direct`` (what ``aigq train sft`` publishes) unless told otherwise, and records its
    ``name@version`` with every run. The vllm-http backend names what the server serves.
    """
    if settings.backend == "vllm-http" or Path(settings.model).is_dir():
        return settings
    ref = Registry().resolve(settings.model)
    version = settings.model_version or ref.tag
    return settings.model_copy(update={"model": str(ref.path), "model_version": version})


def generate() -> None:
    """Run the generator: regeneration requests in, hint-query lists into the u2q cache.

    Configured by AIGQ_GENERATE_* (backend, model, batching, retries), AIGQ_KAFKA_*,
    AIGQ_TOPICS_* and AIGQ_REDIS_*; stops on SIGTERM/SIGINT after committing what is done.
    """
    import asyncio
    import signal

    from generators.settings import GeneratorSettings
    from generators.worker import GeneratorWorker

    settings = _local_model(load(GeneratorSettings))
    worker = GeneratorWorker(
        load(KafkaSettings), load(TopicSettings), load(RedisSettings), settings
    )
    if settings.metrics_port:
        worker.metrics.serve(settings.metrics_port, settings.metrics_bind)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.stop)
        await worker.run()

    asyncio.run(run())


def bench_generate(
    model: Annotated[
        Path | None, typer.Option(help="model folder (default: the registry's aigq-direct)")
    ] = None,
    data_dir: Annotated[Path, typer.Option(help="holds aol/")] = Path("../shared/data"),
    requests: Annotated[int, typer.Option(min=8, help="AOL requests for compression")] = 500,
    batched: Annotated[int, typer.Option(min=4, help="prompts for the batching test")] = 64,
    batch_size: Annotated[int, typer.Option(min=2, help="micro-batch size")] = 32,
    fresh: Annotated[int, typer.Option(min=1, help="requests through the worker")] = 200,
    rate: Annotated[float, typer.Option(min=0.1, help="their rate, per second")] = 20.0,
) -> None:
    """Prompt compression, micro-batched vs one-at-a-time throughput, and freshness."""
    import asyncio

    from aigq.dev.probe import free_port
    from generators import bench
    from generators.vllm_server import start_vllm_server, stop_vllm_server

    tmp = bench.tmpdir()
    aol = data_dir / "aol"
    if not aol.exists():
        raise typer.BadParameter(f"no AOL log at {aol}")
    reqs = bench.aol_requests(aol, max_events=400_000, max_requests=requests)
    console.print(f"{len(reqs)} regeneration requests from real AOL sessions")
    label = str(model)
    if model is None:  # the default model: the registry's latest, else the one shipped
        ref = Registry().resolve(DEFAULT_NAME)
        model, label = ref.path, ref.tag
    from transformers import AutoTokenizer

    comp = bench.compression(reqs, AutoTokenizer.from_pretrained(str(model)), k=10)
    proc, url, startup = start_vllm_server(model, tmp / "vllm.log")
    stack = DevStack(
        KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}"),
        RedisSettings(key_prefix=f"bench:{bench.run_id()}:"),
        TopicSettings(prefix=f"benchgen{bench.run_id()}", partitions=4),
        DevSettings(state_dir=tmp / "stack", start_redis=False),
    )
    try:
        settings = GeneratorSettings(
            base_url=url, batch_size=batch_size, max_tokens=64, k=10,
            group_id=f"bench-{bench.run_id()}",
        )  # fmt: skip
        from generators.requests import prompt_for

        prompts = [prompt_for(r, 10) for r in reqs[:batched]]
        single, many = asyncio.run(bench.batching(settings, prompts))
        stack.up()
        fr = asyncio.run(
            bench.freshness(stack.kafka, stack.topics, stack.redis, settings, reqs[:fresh], rate)
        )
    finally:
        stop_vllm_server(proc)
        stack.down()
    table = Table(title=f"aigq bench generate: vLLM server on the CPU, model: {label}")
    table.add_column("what")
    table.add_column("figure", justify="right")
    table.add_row("vLLM start-up", f"{startup:.1f} s")
    table.add_row(
        "prompt tokens, compressed / verbose",
        f"{comp.ratio:.3f} ({comp.compressed_tokens:,} / {comp.verbose_tokens:,} over "
        f"{comp.prompts} prompts; median per prompt {bench.median(comp.per_prompt):.3f})",
    )
    table.add_row("one at a time", f"{single:.2f} requests/s")
    table.add_row(f"micro-batched ({batch_size})", f"{many:.2f} requests/s")
    table.add_row("batched / one at a time", f"{many / single:.2f}x")
    f = fr.freshness_ms
    table.add_row(
        f"freshness, {fr.requests} requests at {rate:g}/s",
        f"{_p50_p99(f)} ({len(f)} written)",
    )
    m = fr.model_ms
    table.add_row(
        "  of which model time (batch)",
        _p50_p99(m),
    )
    rest = [a - b for a, b in zip(f, m, strict=False)]
    table.add_row(
        "  freshness minus model time",
        _p50_p99(rest),
    )
    console.print(table)
    for name, value, goal, ok in (
        ("compressed / verbose", comp.ratio, "<= 0.4", comp.ratio <= 0.4),
        ("batched / one at a time", many / single, ">= 4", many / single >= 4),
    ):
        console.print(goal_line(name, f"{value:.2f}", goal, ok), highlight=False)


def _p50_p99(values: list[float]) -> str:
    return f"p50 {percentile(values, 0.5):,.0f} ms, p99 {percentile(values, 0.99):,.0f} ms"


def register(app: typer.Typer, bench: typer.Typer) -> None:
    """Add this subsystem's commands to the root command (:mod:`shell.cli`)."""
    app.command("generate")(fails_cleanly(generate))
    bench.command("generate")(fails_cleanly(bench_generate))
