"""deploy/Dockerfile: one target per role, each with only its role's extra, unprivileged.

The file is parsed, not built (no builder is needed): its instructions are grouped by stage, a
stage inherits what its parent stage installed, and each role's target is checked for the
extras its ``pip install`` lines name, its last ``USER`` and its ``ENTRYPOINT``. Extras are
what keeps a role's image small and its environment consistent (vLLM and faust-streaming
cannot share one), so ``dev`` and ``eval`` must never be in a runtime image.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

DOCKERFILE = Path(__file__).resolve().parents[2] / "deploy" / "Dockerfile"

# Each role target and the one extra it installs (pyproject.toml).
ROLES: dict[str, str] = {
    "worker": "stream",
    "generator": "generate",
    "vllm": "generate-gpu",
    "api": "serve",
    "trainer": "train",
}
ENTRYPOINTS: dict[str, list[str]] = {
    "worker": ["aigq"],
    "generator": ["aigq"],
    "vllm": ["vllm", "serve"],
    "api": ["aigq"],
    "trainer": ["aigq"],
}
COMMANDS: dict[str, list[str]] = {
    "worker": ["worker"],
    "generator": ["generate"],
    "api": ["serve"],
    "trainer": ["trainer"],
}
EXTRAS = re.compile(r"\[([A-Za-z0-9_,-]+)\]")


@dataclass
class Stage:
    """One ``FROM ... AS name`` and its instructions, continuation lines joined."""

    name: str
    parent: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        return [rest for kw, rest in self.instructions if kw == keyword]


def logical_lines(text: str) -> list[str]:
    """Instructions one per line: comments dropped, backslash continuations joined."""
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        lines.append(current + line)
        current = ""
    assert not current, "a continuation runs past the end of the file"
    return lines


def parse(text: str) -> dict[str, Stage]:
    """The stages by name (the global ARGs before the first FROM are skipped)."""
    stages: dict[str, Stage] = {}
    stage: Stage | None = None
    for line in logical_lines(text):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = rest.split()
            assert len(words) == 3 and words[1].upper() == "AS", f"unnamed stage: {line}"
            stage = Stage(name=words[2], parent=words[0])
            stages[stage.name] = stage
        elif stage is not None:
            stage.instructions.append((keyword, rest.strip()))
    return stages


def lineage(stages: dict[str, Stage], name: str) -> list[Stage]:
    """The stage and the stages it is built on, nearest first (external images end it)."""
    chain: list[Stage] = []
    while name in stages:
        chain.append(stages[name])
        name = stages[name].parent
    return chain


def installed_extras(stages: dict[str, Stage], name: str) -> set[str]:
    """The extras every ``pip install`` in the stage and its parents names."""
    extras: set[str] = set()
    for stage in lineage(stages, name):
        for run in stage.args("RUN"):
            for command in re.split(r"&&|;", run):
                if "pip install" in command:
                    for group in EXTRAS.findall(command):
                        extras.update(group.split(","))
    return extras


def last(stages: dict[str, Stage], name: str, keyword: str) -> str | None:
    """The value of the stage's last ``keyword`` instruction, inherited if it has none."""
    for stage in lineage(stages, name):
        values = stage.args(keyword)
        if values:
            return values[-1]
    return None


@pytest.fixture(scope="module")
def stages() -> dict[str, Stage]:
    return parse(DOCKERFILE.read_text(encoding="utf-8"))


def test_parse_joins_continuations_and_finds_extras() -> None:
    text = (
        "ARG BASE=python:3.11-slim\n"
        "FROM ${BASE} AS base\n"
        "# a comment\n"
        "FROM base AS one\n"
        "RUN pip install x \\\n"
        '    && pip install "/w/p.whl[serve,train]"\n'
        "USER 10001\n"
    )
    parsed = parse(text)
    assert list(parsed) == ["base", "one"]
    assert parsed["one"].parent == "base"
    assert installed_extras(parsed, "one") == {"serve", "train"}
    assert last(parsed, "one", "USER") == "10001"
    assert last(parsed, "base", "USER") is None


@pytest.mark.parametrize("role", sorted(ROLES))
def test_role_target_installs_only_its_extra(stages: dict[str, Stage], role: str) -> None:
    assert role in stages, f"deploy/Dockerfile has no `{role}` target"
    assert installed_extras(stages, role) == {ROLES[role]}


@pytest.mark.parametrize("role", sorted(ROLES))
def test_role_target_runs_unprivileged(stages: dict[str, Stage], role: str) -> None:
    user = last(stages, role, "USER")
    assert user is not None, f"{role} sets no USER"
    assert user.split(":")[0] not in {"0", "root"}
    # USER is the last instruction that can change who runs: nothing after it runs as root.
    keywords = [kw for kw, _ in stages[role].instructions]
    assert "RUN" not in keywords[keywords.index("USER") :]


@pytest.mark.parametrize("role", sorted(ROLES))
def test_role_target_has_its_entrypoint(stages: dict[str, Stage], role: str) -> None:
    entrypoint = last(stages, role, "ENTRYPOINT")
    assert entrypoint is not None, f"{role} sets no ENTRYPOINT"
    assert entrypoint.startswith("["), "exec form, so that signals reach the process"
    assert [w.strip(' "') for w in entrypoint.strip("[]").split(",")] == ENTRYPOINTS[role]
    if role in COMMANDS:
        command = last(stages, role, "CMD")
        assert command is not None
        assert [w.strip(' "') for w in command.strip("[]").split(",")] == COMMANDS[role]


def test_no_stage_installs_dev_or_eval(stages: dict[str, Stage]) -> None:
    for name in stages:
        assert not installed_extras(stages, name) & {"dev", "eval"}, name


def test_builder_stage_copies_no_tests(stages: dict[str, Stage]) -> None:
    copied = [rest for stage in stages.values() for rest in stage.args("COPY")]
    assert not [c for c in copied if re.search(r"\btests\b|\.venv", c)]
