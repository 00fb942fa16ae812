"""The generation subsystem's commands: ``aigq generate``, ``aigq model list|rollback|announce``
(the registry and hot reload: :mod:`generators.announce`), ``aigq bench generate`` and
``aigq bench reload``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, cast

import typer
from rich.table import Table

from aigq.cli_kit import console, fails_cleanly, goal_line
from aigq.dev.stack import DevSettings, DevStack
from aigq.errors import RegistryError
from aigq.events import ModelKind
from aigq.registry import DEFAULT_NAME, ModelRef, Registry
from aigq.settings import KafkaSettings, RedisSettings, TopicSettings, load
from aigq.stats import percentile
from generators import cli_x2q
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


def bench_reload(
    requests: Annotated[int, typer.Option(min=8, help="regeneration requests sent")] = 240,
    rate: Annotated[float, typer.Option(min=0.1, help="their rate, per second")] = 8.0,
    max_tokens: Annotated[int, typer.Option(min=8, help="generated tokens per list")] = 24,
    batch_size: Annotated[int, typer.Option(min=1, help="micro-batch size")] = 8,
    data_dir: Annotated[Path, typer.Option(help="holds aol/ (else synthetic)")] = Path(
        "../shared/data"
    ),
) -> None:
    """A new model version announced half-way through steady load: failed or dropped requests
    across the reload (transformers backend on the CPU, a throwaway broker)."""
    import asyncio
    import shutil

    from aigq.dev.probe import free_port
    from aigq.registry import SHIPPED
    from generators import bench
    from generators.bench_reload import publish_copy, run_reload, synthetic_requests

    tmp = bench.tmpdir()
    if (data_dir / "aol").is_dir():
        reqs = bench.aol_requests(data_dir / "aol", max_events=400_000, max_requests=requests)
        source = f"real AOL sessions ({data_dir / 'aol'})"
    else:
        reqs, source = synthetic_requests(requests), "synthetic requests (no AOL log found)"
    registry = Registry(tmp / "registry", shipped=None)
    first = publish_copy(registry, SHIPPED, DEFAULT_NAME, parent="shipped")
    stack = DevStack(
        KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}"),
        RedisSettings(key_prefix=f"bench:{bench.run_id()}:"),
        TopicSettings(prefix=f"benchreload{bench.run_id()}", partitions=4),
        DevSettings(state_dir=tmp / "stack", start_redis=False),
    )
    settings = GeneratorSettings(
        backend="transformers", model=str(first.path), model_version=first.tag, k=5,
        max_tokens=max_tokens, batch_size=batch_size, group_id=f"bench-{bench.run_id()}",
    )  # fmt: skip
    try:
        stack.up()
        fig = asyncio.run(
            run_reload(stack.kafka, stack.topics, stack.redis, settings, registry, reqs, rate)
        )
    finally:
        stack.down()
        shutil.rmtree(tmp, ignore_errors=True)
    table = Table(title=f"aigq bench reload: transformers on the CPU, {len(reqs)} {source}")
    table.add_column("what")
    table.add_column("figure", justify="right")
    table.add_row("requests sent", f"{fig.sent} at {rate:g}/s")
    for version, count in sorted(fig.lists.items()):
        table.add_row(f"  lists by {version}", str(count))
    table.add_row("  of which malformed (no valid query)", str(fig.malformed))
    table.add_row("dead-lettered", str(fig.dead_letters))
    table.add_row("never answered", str(fig.unanswered))
    swap = f"{fig.swap_s:.2f} s" if fig.swap_s is not None else "-"
    table.add_row("swap (load + switch)", swap)
    new = fig.announce_to_new_ms
    table.add_row(
        f"announcement -> first list by {fig.new}", f"{new:,.0f} ms" if new is not None else "-"
    )
    outcomes = ", ".join(f"{k} {v:g}" for k, v in fig.reloads.items()) or "none"
    table.add_row("reloads by outcome", outcomes)
    console.print(table)
    swapped = fig.lists.get(fig.new, 0) > 0
    note = "" if swapped else " (no list by the new version: the reload did not happen)"
    console.print(
        goal_line(
            "failed or dropped across the reload",
            str(fig.failed_or_dropped),
            "== 0",
            fig.failed_or_dropped == 0 and swapped,
            note,
        ),
        highlight=False,
    )


# --- aigq model: the registry's versions, announcing one, rolling back ---------------------


def _kind(kind: str) -> ModelKind:
    if kind not in ("generator", "ctr"):
        raise typer.BadParameter(f"{kind!r}: generator or ctr")
    return cast(ModelKind, kind)


_KIND = typer.Option(help="what the model is: generator or ctr")


def _metrics(manifest: dict[str, Any]) -> str:
    metrics = manifest.get("metrics") or {}
    if not isinstance(metrics, dict):
        return str(metrics)
    return ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(metrics.items())
    )


def model_list(
    name: Annotated[str | None, typer.Argument(help="a model name (default: every one)")] = None,
) -> None:
    """A model's published versions, which one is LATEST, and what each manifest records."""
    registry = Registry()
    root = registry.root
    if name is not None:
        names = [name]
    else:
        names = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        if DEFAULT_NAME not in names:
            names.append(DEFAULT_NAME)  # the shipped default serves while none is published
    table = Table(title=f"models in {root}")
    for column in ("name", "version", "LATEST", "kind", "created", "parent", "metrics"):
        table.add_column(column)
    for model in names:
        latest = registry.latest(model)
        refs = [registry.get(model, v) for v in registry.versions(model)]
        if not refs and latest is not None:
            refs = [latest]  # the shipped default
        for ref in refs:
            try:
                manifest = ref.manifest()
            except RegistryError:
                manifest = {"kind": "(unreadable manifest)"}
            mark = "*" if latest is not None and latest.version == ref.version else ""
            table.add_row(
                ref.name, ref.version, mark, str(manifest.get("kind", "")),
                str(manifest.get("created", "")), str(manifest.get("parent", "")),
                _metrics(manifest),
            )  # fmt: skip
    console.print(table)


def _announce(ref: ModelRef, kind: ModelKind, reason: Literal["publish", "rollback"]) -> None:
    from generators.announce import announce, announcement_for

    topics = load(TopicSettings)
    made = announcement_for(ref, kind, reason)
    announce(load(KafkaSettings), topics, made)
    console.print(f"announced {ref.tag} on {topics.name('models')} ({made.reason})")


def model_rollback(
    name: Annotated[str, typer.Argument(help="the model's registry name")],
    to: Annotated[
        str | None, typer.Option(help="the version (default: the one before LATEST)")
    ] = None,
    kind: Annotated[str, _KIND] = "generator",
) -> None:
    """Point LATEST back at an earlier version and announce it: generators swap to it."""
    from generators.announce import rollback

    registry = Registry()
    before = registry.latest(name)
    ref = rollback(registry, name, to)
    console.print(f"{name}: LATEST {before.version if before else '-'} -> {ref.version}")
    _announce(ref, _kind(kind), "rollback")


def model_announce(
    spec: Annotated[str, typer.Argument(help="NAME (its LATEST) or NAME@VERSION")],
    kind: Annotated[str, _KIND] = "generator",
) -> None:
    """Announce a published version (again): generators serving NAME swap to it."""
    registry = Registry()
    name, _, version = spec.partition("@")
    ref = registry.get(name, version) if version else registry.latest(name)
    if ref is None:
        raise RegistryError(f"no published {name!r} in the registry at {registry.root}")
    _announce(ref, _kind(kind), "publish")


def register(app: typer.Typer, bench: typer.Typer) -> None:
    """Add this subsystem's commands to the root command (:mod:`shell.cli`)."""
    app.command("generate")(fails_cleanly(generate))
    model = typer.Typer(help="The model registry: versions, announcing one, rolling back.")
    model.command("list")(fails_cleanly(model_list))
    model.command("rollback")(fails_cleanly(model_rollback))
    model.command("announce")(fails_cleanly(model_announce))
    app.add_typer(model, name="model")
    bench.command("generate")(fails_cleanly(bench_generate))
    bench.command("reload")(fails_cleanly(bench_reload))
    cli_x2q.register(app)
