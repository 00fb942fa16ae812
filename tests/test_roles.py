"""Each role's process imports only the packages its extra installs (pyproject.toml).

A role is one deployable process: the session worker (``stream``), the generator
(``generate``), the read API (``serve``), training (``train``) and offline evaluation
(``eval``). For each, a fresh interpreter imports the modules that process runs, and every
third-party distribution then in ``sys.modules`` must be in the closure of the base
requirements plus that role's extra (read from the installed package's metadata, so the test
follows pyproject.toml). The root ``aigq`` command is checked against the base alone: it
imports every subsystem's commands, so those must import their heavy packages only inside
the command that needs them.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
OURS = {"aigq", "streams", "generators", "cache", "training", "shell", "tests"}
# Imported by a library only when it happens to be installed (a guarded import), so they are
# seen in the dev environment and absent from a role's own: redis-py's metrics hooks
# (redis.observability), rich's pretty-printer (rich.pretty tries attrs) and httpx's command
# line (httpx._main tries click).
OPTIONAL = {"opentelemetry-api", "opentelemetry-sdk", "attrs", "click"}

# What each role's process imports (its command's module, and what that command loads).
ROLES: dict[str | None, tuple[str, ...]] = {
    None: ("shell.cli",),  # the root command: base packages only
    "stream": ("streams.worker", "streams.replay_workers", "streams.backfill"),
    "generate": ("generators.worker", "generators.backends.openai_http"),
    "serve": ("cache.api", "cache.http"),
    "train": ("training.sft", "training.cli_train"),
    "eval": ("training.evaluate", "training.evaluate_lastday", "training.cli_eval"),
}

_IMPORTED = """
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules})))
"""


def _key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _closure(extra: str | None) -> set[str]:
    """The distributions the base requirements (and ``extra``'s) pull in, recursively."""
    wanted: list[tuple[str, str | None]] = [("aigq-nearline", extra)]
    seen: set[str] = set()
    while wanted:
        name, with_extra = wanted.pop()
        if _key(name) in seen and with_extra is None:
            continue
        seen.add(_key(name))
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            continue  # an optional dependency that is not installed here
        for line in requires:
            req = Requirement(line)
            env = {"extra": with_extra or ""}
            if req.marker is None or req.marker.evaluate(env):
                for sub in req.extras or {None}:
                    wanted.append((req.name, sub))
    return seen


def _imported(modules: tuple[str, ...]) -> set[str]:
    run = subprocess.run(
        [sys.executable, "-c", _IMPORTED, *modules],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    top = set(json.loads(run.stdout.strip().splitlines()[-1]))
    stdlib = set(sys.stdlib_module_names) | set(sys.builtin_module_names)
    mapping = md.packages_distributions()
    dists: set[str] = set()
    for name in top - stdlib - OURS:
        # A name no installed distribution provides is not a package on disk: a module an
        # extension creates at run time (cython_runtime) or a private helper.
        dists.update(_key(d) for d in mapping.get(name, []))
    return dists


@pytest.mark.parametrize("role", list(ROLES), ids=lambda r: r or "base")
def test_a_role_imports_only_its_extra(role: str | None) -> None:
    allowed = _closure(role) | OPTIONAL | {"setuptools", "pip"}  # pkg_resources: setuptools
    extra = _imported(ROLES[role]) - allowed
    assert not extra, f"{role or 'the root command'} imports {sorted(extra)}, not in its extra"
