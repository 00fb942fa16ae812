"""Best Buy "ACM SF hackathon small" click log (CSV) → search and click events.

Columns: ``user,sku,category,query,click_time,query_time``. Each row becomes a ``search`` at
``query_time`` and a ``click`` on ``sku`` at ``click_time`` (clamped to be no earlier than its
search). The log has no product titles, so the item text is the category's name and the SKU.
Rows are sorted by time (ties keep file order); the log's times are read as UTC.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from aigq.datasets.base import Malformed, SourceItem, reason_of
from aigq.errors import DatasetError
from aigq.events import ClickEvent, SearchEvent

COLUMNS = ("user", "sku", "category", "query", "click_time", "query_time")
# The one category of the log, and the parent it sits under in Best Buy's tree.
CATEGORY_NAMES = {"abcat0701002": ("Video Games", "Xbox 360 Games")}


def iter_bestbuy(path: Path) -> Iterator[SourceItem]:
    """Events from one CSV, or from ``train.csv`` then ``test.csv`` in a folder, by time."""
    files = _csv_files(path)
    items: list[tuple[int, int, SourceItem]] = []
    for file in files:
        try:
            with file.open(encoding="utf-8", errors="replace", newline="") as handle:
                for item in parse_rows(handle, origin=file.name):
                    items.append((item.ts, len(items), item))
        except OSError as exc:
            raise DatasetError(f"cannot read {file}: {exc}") from exc
    items.sort(key=lambda entry: (entry[0], entry[1]))
    return (item for _, _, item in items)


def _csv_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    folder = path / "bestbuy" if (path / "bestbuy").is_dir() else path
    files = [f for f in (folder / "train.csv", folder / "test.csv") if f.is_file()]
    if not files:
        raise DatasetError(f"no Best Buy train.csv/test.csv under {folder}")
    return files


def parse_rows(lines: Iterator[str] | list[str], origin: str = "bestbuy") -> Iterator[SourceItem]:
    """Parse CSV text (header first). Bad rows come out as :class:`Malformed`, never raise."""
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is None:
        return
    if tuple(h.strip() for h in header) != COLUMNS:
        raise DatasetError(f"{origin}: header {header} is not {list(COLUMNS)}")
    for row in reader:
        where = f"{origin}:{reader.line_num}"
        raw = ",".join(row)
        if len(row) != len(COLUMNS):
            yield Malformed(where, raw, f"expected {len(COLUMNS)} columns, got {len(row)}")
            continue
        user, sku, category, query, click_time, query_time = (c.strip() for c in row)
        search_ts, click_ts = _parse_time(query_time), _parse_time(click_time)
        if search_ts is None:
            yield Malformed(where, raw, f"bad query_time {query_time!r}")
            continue
        try:
            yield SearchEvent(user_id=user, ts=search_ts, query=query)
        except ValidationError as exc:
            yield Malformed(where, raw, reason_of(exc), search_ts)
            continue
        if click_ts is None:
            yield Malformed(where, raw, f"bad click_time {click_time!r}", search_ts)
            continue
        try:
            yield ClickEvent(
                user_id=user,
                ts=max(click_ts, search_ts),
                item_id=sku,
                item_text=f"{CATEGORY_NAMES.get(category, (category,))[-1]} sku {sku}",
                category=CATEGORY_NAMES.get(category, (category,)),
            )
        except ValidationError as exc:
            yield Malformed(where, raw, reason_of(exc), search_ts)


def _parse_time(stamp: str) -> int | None:
    try:
        moment = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return round(moment.timestamp() * 1000)
