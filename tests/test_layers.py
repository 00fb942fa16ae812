"""The layers hold: the core imports no subsystem, no subsystem imports the shell, and the
older rules (streams never import generators or training; cache never imports streams,
generators or training). The contracts are in pyproject.toml; this runs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_import_contract_is_kept() -> None:
    # In a subprocess: import-linter builds the whole import graph, and its cache must not
    # land in the repository (--no-cache).
    run = subprocess.run(
        [sys.executable, "-c",
         "import sys; from importlinter.cli import lint_imports; "
         "sys.exit(lint_imports(config_filename='pyproject.toml', no_cache=True, no_logo=True))"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 broken" in run.stdout
