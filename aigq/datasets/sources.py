"""Open a dataset source by name: ``aol``, ``bestbuy`` or ``synthetic``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Literal, get_args

from aigq.datasets.aol import iter_aol
from aigq.datasets.base import SourceItem
from aigq.datasets.bestbuy import iter_bestbuy
from aigq.datasets.synthetic import SyntheticConfig, generate
from aigq.errors import DatasetError

SourceName = Literal["aol", "bestbuy", "synthetic"]
SOURCE_NAMES: tuple[str, ...] = get_args(SourceName)


def open_source(
    name: str,
    path: Path | None = None,
    data_dir: Path = Path("../shared/data"),
    synthetic: SyntheticConfig | None = None,
) -> Iterator[SourceItem]:
    """The time-ordered items of one source.

    ``path`` overrides where a log source is read from (default: ``data_dir/aol`` or
    ``data_dir/bestbuy``); ``synthetic`` configures the generator.
    """
    if name == "aol":
        return iter_aol(path or data_dir / "aol")
    if name == "bestbuy":
        return iter_bestbuy(path or data_dir / "bestbuy")
    if name == "synthetic":
        return generate(synthetic or SyntheticConfig())
    raise DatasetError(f"unknown source {name!r}; expected one of {', '.join(SOURCE_NAMES)}")
