"""What every subsystem's commands share: the goal line and the one way a command fails."""

from __future__ import annotations

import pytest
import typer

from aigq.cli_kit import fails_cleanly, goal_line
from aigq.errors import ConfigError


def test_a_goal_line_names_the_value_the_goal_and_the_verdict() -> None:
    assert (
        goal_line("p99", "1.05 ms", "<= 5 ms", True) == "p99: [bold]1.05 ms[/] (goal <= 5 ms: met)"
    )
    line = goal_line("ratio", "0.37", ">= 0.5", False, " (per round: 0.37)")
    assert line == "ratio: [bold]0.37[/] (per round: 0.37) (goal >= 0.5: NOT met)"


def test_a_project_error_is_exit_1_and_anything_else_propagates() -> None:
    @fails_cleanly
    def bad_setting() -> None:
        raise ConfigError("AIGQ_X: no")

    @fails_cleanly
    def bug() -> None:
        raise RuntimeError("a bug is a traceback, not a red line")

    with pytest.raises(typer.Exit) as exit_info:
        bad_setting()
    assert exit_info.value.exit_code == 1
    with pytest.raises(RuntimeError):
        bug()
