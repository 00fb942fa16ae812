"""What every subsystem's commands share: the consoles and the one way a command fails.

Each subsystem owns its commands (``streams/cli.py``, ``generators/cli.py``, ``cache/cli.py``,
``training/cli.py``) and registers them on the root command, which :mod:`shell.cli`
assembles. Settings are read from the environment in the command being run, never at import
time. Every project error is printed as one red line with exit status 1.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import typer
from rich.console import Console

from aigq.errors import AigqError

P = ParamSpec("P")
R = TypeVar("R")

console = Console()
err_console = Console(stderr=True)


def fails_cleanly(command: Callable[P, R]) -> Callable[P, R]:
    """A project error becomes one red line on stderr and exit status 1 (no traceback)."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except AigqError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
            raise typer.Exit(1) from exc

    return wrapper


def goal_line(name: str, value: str, goal: str, ok: bool, note: str = "") -> str:
    """One benchmark goal and its verdict, as every ``bench`` command prints it (rich markup):
    ``name: **value**note (goal G: met)``."""
    return f"{name}: [bold]{value}[/]{note} (goal {goal}: {'met' if ok else 'NOT met'})"
