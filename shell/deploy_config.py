"""The Kubernetes ConfigMaps' and Secret's env files, generated from the settings classes.

``python -m shell.deploy_config`` rewrites ``deploy/k8s/base/config/*.env``;
``tests/deploy/test_deploy_config.py`` fails when the files and the classes disagree, so a new
setting cannot be missing from the manifests. Which classes each role reads is not listed by
hand: :func:`role_settings` reads the ``load(Class)`` calls in the role's command function
(``aigq worker`` is :func:`streams.cli.worker`, and so on).

The files: ``common.env`` holds the classes more than one role reads (Kafka, Redis, topics)
and the plain variables; ``<role>.env`` the rest of each role's; ``secrets.env`` every secret
(``SecretStr``) field. Every variable appears with its default, except the values a pod must
change (:data:`IN_CLUSTER`: listen on every interface, ports, data directories on volumes,
the in-cluster Kafka, Redis and vLLM). A variable whose default is "unset" (``None``, or an
empty secret) cannot be written as an empty value (pydantic reads ``""`` as a value), so it is
listed commented out, with its meaning, for an overlay to set.
"""

from __future__ import annotations

import ast
import inspect
import sys
import textwrap
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings

from cache import cli as cache_cli
from generators import cli as generators_cli
from generators import cli_x2q
from streams import cli as streams_cli
from training import cli_trainer

CONFIG_DIR = Path(__file__).resolve().parents[1] / "deploy" / "k8s" / "base" / "config"

# The process each role's containers run: its ``aigq`` subcommand and the command function.
ROLES: dict[str, tuple[str, Callable[..., Any]]] = {
    "worker": ("worker", streams_cli.worker),
    "generator": ("generate", generators_cli.generate),
    "api": ("serve", cache_cli.serve),
    "trainer": ("trainer", cli_trainer.trainer_command),
    "backfill": ("backfill", streams_cli.backfill),
    "x2q": ("x2q", cli_x2q.build),
}
# Roles whose variables share another role's ConfigMap (the backfill Job runs the worker's code).
CONFIG_OF = {"backfill": "worker"}

# Variables read directly from the environment, not through a settings class (docs/settings.md).
PLAIN: dict[str, tuple[str, str]] = {
    "AIGQ_LOG_LEVEL": ("INFO", "DEBUG..ERROR; logs are JSON lines on stderr"),
    "AIGQ_MODEL_REGISTRY": (
        "/var/lib/aigq/models",
        "the model registry's root: the shared models volume",
    ),
}

# Values a pod must override, and why (deploy/k8s/README.md repeats them).
IN_CLUSTER: dict[str, str] = {
    "AIGQ_KAFKA_BOOTSTRAP_SERVERS": "kafka:9092",
    "AIGQ_REDIS_URL": "redis://redis:6379/0",
    "AIGQ_WEB_BIND": "0.0.0.0",
    "AIGQ_STREAM_DATA_DIR": "/var/lib/aigq/worker",
    "AIGQ_GENERATE_BASE_URL": "http://aigq-vllm:8000",
    "AIGQ_GENERATE_METRICS_BIND": "0.0.0.0",
    "AIGQ_GENERATE_METRICS_PORT": "9100",
    "AIGQ_SERVE_BIND": "0.0.0.0",
    "AIGQ_TRAINER_STATE_DIR": "/var/lib/aigq/trainer",
    "AIGQ_TRAINER_METRICS_BIND": "0.0.0.0",
    "AIGQ_TRAINER_METRICS_PORT": "9100",
}

HEAD = """\
# Generated from the settings classes by `python -m shell.deploy_config`; do not edit by hand
# (tests/deploy/test_deploy_config.py fails when this file and the classes disagree).
# Overlays change values with a configMapGenerator (or secretGenerator) `behavior: merge`.
# A commented line is a variable that is unset by default: set it in an overlay if needed.
"""


@dataclass(frozen=True)
class Variable:
    """One environment variable: its name, the value written (None: unset) and its meaning."""

    name: str
    value: str | None
    meaning: str
    secret: bool


def _load_calls(func: Callable[..., Any]) -> Iterator[str]:
    """The names passed as first argument to ``load(...)`` in ``func``'s body."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(func)))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "load"
            and node.args
            and isinstance(node.args[0], ast.Name)
        ):
            yield node.args[0].id


def _local_imports(func: Callable[..., Any]) -> dict[str, Any]:
    """What ``from m import X`` statements inside ``func`` bind (its lazy imports)."""
    names: dict[str, Any] = {}
    tree = ast.parse(textwrap.dedent(inspect.getsource(func)))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            module = __import__(node.module, fromlist=["_"])
            for alias in node.names:
                names[alias.asname or alias.name] = getattr(module, alias.name)
    return names


def role_settings(role: str) -> tuple[type[BaseSettings], ...]:
    """The settings classes the role's command loads, in the order its code loads them."""
    func = ROLES[role][1]
    scope = {**func.__globals__, **_local_imports(func)}
    found: list[type[BaseSettings]] = []
    for name in _load_calls(func):
        cls = scope[name]
        if cls not in found:
            found.append(cls)
    return tuple(found)


def _is_secret(annotation: Any) -> bool:
    if annotation is SecretStr:
        return True
    return any(_is_secret(arg) for arg in typing.get_args(annotation))


def _value(info: FieldInfo) -> str | None:
    """The default as the environment would spell it; None when it means "unset"."""
    value = info.default
    if value is PydanticUndefined:
        raise ValueError("a setting without a default cannot be written")
    if value is None or isinstance(value, SecretStr):
        return None
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple | list | frozenset | set):
        if any(isinstance(v, SecretStr) for v in value):
            return None
        return ",".join(str(v) for v in value) if value else None
    return str(value)


def variables(cls: type[BaseSettings]) -> list[Variable]:
    """One :class:`Variable` per field of ``cls``, with the in-cluster value where it has one."""
    prefix = str(cls.model_config.get("env_prefix", ""))
    out = []
    for field, info in cls.model_fields.items():
        name = f"{prefix}{field.upper()}"
        secret = _is_secret(info.annotation)
        value = IN_CLUSTER.get(name, _value(info))
        meaning = " ".join((info.description or "").split())
        out.append(Variable(name, value, meaning, secret))
    return out


def role_variables(role: str) -> list[Variable]:
    """Every variable a role's process reads: its classes' fields and the plain variables."""
    out = [Variable(n, v, m, False) for n, (v, m) in PLAIN.items()]
    for cls in role_settings(role):
        out += variables(cls)
    return out


def _shared_classes() -> list[type[BaseSettings]]:
    """Classes read by more than one role: they go in ``common.env``, written once."""
    seen: dict[type[BaseSettings], int] = {}
    for role in ROLES:
        if role in CONFIG_OF:
            continue
        for cls in role_settings(role):
            seen[cls] = seen.get(cls, 0) + 1
    return [cls for cls, count in seen.items() if count > 1]


def _section(cls: type[BaseSettings], secret: bool) -> list[str]:
    rows = [v for v in variables(cls) if v.secret == secret]
    if not rows:
        return []
    doc = " ".join((cls.__doc__ or "").split())
    lines = [f"# {cls.__name__}: {doc}"]
    for var in rows:
        if var.value is None:
            lines.append(f"# {var.name}=  (unset: {var.meaning})")
        else:
            lines.append(f"{var.name}={var.value}")
    return lines


def render() -> dict[str, str]:
    """Every env file's name and text."""
    shared = _shared_classes()
    common = ["# Plain variables (read directly, not through a settings class)"]
    common += [f"{name}={value}" for name, (value, _) in PLAIN.items()]
    for cls in shared:
        common += _section(cls, secret=False)
    files = {"common.env": common}
    secrets: list[str] = []
    every: list[type[BaseSettings]] = []
    for role in ROLES:
        classes = role_settings(role)
        every += [cls for cls in classes if cls not in every]
        if role in CONFIG_OF:
            continue
        own: list[str] = []
        for cls in classes:
            if cls not in shared:
                own += _section(cls, secret=False)
        files[f"{role}.env"] = own
    for cls in every:
        secrets += _section(cls, secret=True)
    files["secrets.env"] = secrets
    return {name: HEAD + "\n".join(lines) + "\n" for name, lines in files.items()}


def main() -> None:
    CONFIG_DIR.mkdir(parents=True, exist_ok=True)
    for name, text in render().items():
        (CONFIG_DIR / name).write_text(text)
        print(f"wrote {CONFIG_DIR / name}", file=sys.stderr)


if __name__ == "__main__":
    main()
