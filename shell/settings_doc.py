"""docs/settings.md, generated from the settings classes, so the reference cannot go stale.

``python -m shell.settings_doc`` rewrites it; ``tests/shell/test_settings_doc.py`` fails when
the file and the classes disagree. Each component's class is listed with its docstring, then
one row per variable: its default, its type and bounds, and the field's ``description``.
"""

from __future__ import annotations

import sys
import types
import typing
from pathlib import Path
from typing import Any

import annotated_types
from pydantic import SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings

from aigq.dev.stack import DevSettings
from aigq.settings import RENAMED, KafkaSettings, RedisSettings, TopicSettings, WebSettings
from cache.settings import HintSettings, ServeSettings
from generators.settings import GeneratorSettings
from generators.x2q_settings import X2QSettings
from streams.replay import ReplaySettings
from streams.settings import StreamSettings
from streams.simulator import SimulatorSettings
from training.trainer_settings import TrainerSettings

PATH = Path(__file__).resolve().parents[1] / "docs" / "settings.md"

# Which processes read each component (the order of the page).
COMPONENTS: tuple[tuple[type[BaseSettings], str], ...] = (
    (KafkaSettings, "every process that talks to Kafka"),
    (RedisSettings, "every process that talks to Redis"),
    (TopicSettings, "every process that talks to Kafka"),
    (StreamSettings, "`aigq worker`, `aigq backfill`"),
    (WebSettings, "`aigq worker` (its Faust web server)"),
    (ReplaySettings, "`aigq replay`"),
    (GeneratorSettings, "`aigq generate`"),
    (X2QSettings, "`aigq x2q build` (the x2q index job)"),
    (HintSettings, "`aigq serve` (the read path)"),
    (ServeSettings, "`aigq serve` (the HTTP server)"),
    (SimulatorSettings, "`aigq simulate` (the user simulator: docs/simulator.md)"),
    (TrainerSettings, "`aigq trainer` (the learning loop: docs/learning.md)"),
    (DevSettings, "`aigq dev`, the benchmarks and tests that start a local stack"),
)

HEAD = """# Settings

Generated from the settings classes by `python -m shell.settings_doc`; do not edit by hand
(`tests/shell/test_settings_doc.py` fails when this page and the classes disagree).

Every component reads one frozen pydantic-settings object from `AIGQ_<COMPONENT>_*`
environment variables, in the command being run, never at import time. A bad value fails with
the variable's name, e.g. `error: AIGQ_TOPICS_PARTITIONS: Input should be greater than or equal
to 1`. Secrets (`SecretStr`) are never printed. Four more variables are read directly:
`AIGQ_LOG_LEVEL` (`INFO`; logs are JSON lines on stderr, coloured lines on a terminal),
`AIGQ_MODEL_REGISTRY` (the model registry's root, `~/.cache/aigq/models`),
`AIGQ_SHIPPED_MODEL` (the trained default `aigq-direct` falls back to while the registry has
none: the repository's `models/aigq-direct`; the images set `/app/models/aigq-direct`) and
`AIGQ_VLLM_PYTHON` (the Python that runs the vLLM server, `.venv-vllm/bin/python`).
"""

_BOUNDS = (
    (annotated_types.Ge, "ge", ">="),
    (annotated_types.Gt, "gt", ">"),
    (annotated_types.Le, "le", "<="),
    (annotated_types.Lt, "lt", "<"),
    (annotated_types.MinLen, "min_length", "length >="),
    (annotated_types.MaxLen, "max_length", "length <="),
)


def _type(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " | ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type(a) for a in args if a is not type(None)) + " (optional)"
    if origin is not None:
        inner = ", ".join(_type(a) for a in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    if annotation is SecretStr:
        return "secret"
    return getattr(annotation, "__name__", str(annotation))


def _bounds(info: FieldInfo) -> str:
    out = []
    for item in info.metadata:
        for kind, attr, sign in _BOUNDS:
            if isinstance(item, kind):
                out.append(f"{sign} {getattr(item, attr)}")
    return ", ".join(out)


def _default(info: FieldInfo) -> str:
    if info.default_factory is not None:
        return "(computed)"
    value = info.default
    if value is PydanticUndefined:
        return "(required)"
    if value is None or value == "":
        return "—"
    if isinstance(value, SecretStr):
        return "(secret)"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, (list, tuple, frozenset, set)):
        return "`" + ",".join(str(v) for v in value) + "`" if value else "—"
    return f"`{value}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def section(cls: type[BaseSettings], read_by: str) -> str:
    prefix = str(cls.model_config.get("env_prefix", ""))
    doc = " ".join((cls.__doc__ or "").split())
    lines = [f"## `{prefix}*`: {cls.__name__}", "", f"{doc} Read by {read_by}.", ""]
    lines += ["| variable | default | type | meaning |", "|---|---|---|---|"]
    for name, info in cls.model_fields.items():
        kind = _type(info.annotation)
        bounds = _bounds(info)
        lines.append(
            f"| `{prefix}{name.upper()}` | {_default(info)} | "
            f"{_cell(kind + (f'; {bounds}' if bounds else ''))} | "
            f"{_cell(info.description or '')} |"
        )
    return "\n".join(lines) + "\n"


def render() -> str:
    renamed = ", ".join(f"`{old}` (now `{new}`)" for old, new in sorted(RENAMED.items()))
    gone = f"\nNo longer read; setting one is an error that names its replacement: {renamed}.\n"
    return HEAD + gone + "".join("\n" + section(cls, who) for cls, who in COMPONENTS)


def main() -> None:
    PATH.write_text(render())
    print(f"wrote {PATH}", file=sys.stderr)


if __name__ == "__main__":
    main()
