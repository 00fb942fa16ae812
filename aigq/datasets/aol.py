"""AOL query log 2006, one file per user (``<AnonID>.txt``) → search and click events.

A file is blocks separated by blank lines; each block is ``query<TAB>YYYY-MM-DD HH:MM:SS``
followed by one clicked URL per line. Each block becomes one ``search`` event and one
``click`` event per URL (item id = the URL, item text = host and path words, category = the
host).

The log times clicks only by their query's second, so click *j* of a block is placed *j + 1*
milliseconds after its search; a user's timestamps are then clamped to never go backwards, so
the stream order is the file order. The log's times are read as UTC.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from aigq.datasets.base import Malformed, SourceItem, merge_by_time, reason_of
from aigq.datasets.text import url_parts
from aigq.errors import DatasetError
from aigq.events import ClickEvent, SearchEvent


def iter_aol(path: Path, max_users: int | None = None) -> Iterator[SourceItem]:
    """All users under ``path`` (a folder of ``*.txt`` or one file), merged by time."""
    files = _user_files(path)
    if max_users is not None:
        files = files[:max_users]
    return merge_by_time(iter_user_file(f) for f in files)


def _user_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DatasetError(f"AOL source {path} is neither a folder nor a file")
    folder = path / "user_search_logs" if (path / "user_search_logs").is_dir() else path
    files = sorted(folder.glob("*.txt"))
    if not files:
        raise DatasetError(f"no AOL user files (*.txt) under {folder}")
    return files


def iter_user_file(path: Path) -> Iterator[SourceItem]:
    """One user's events in file order; the user id is the file's stem (the AnonID)."""
    try:
        with path.open(encoding="utf-8", errors="replace") as lines:
            yield from parse_user_lines(path.stem, lines, origin=path.name)
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc}") from exc


def parse_user_lines(
    user_id: str, lines: Iterator[str] | list[str], origin: str = "aol"
) -> Iterator[SourceItem]:
    """Parse one user's lines. Malformed lines come out as :class:`Malformed`, never raise."""
    last_ts = 0
    search_ts: int | None = None  # None: no usable search above, so URLs have no anchor
    clicks = 0
    for number, raw in enumerate(lines, start=1):
        line = raw.rstrip("\r\n")
        where = f"{origin}:{number}"
        if not line.strip():
            search_ts = None
            continue
        query, tab, stamp = line.rpartition("\t")
        if tab:
            search_ts = None
            ts = _parse_time(stamp)
            if ts is None:
                yield Malformed(where, line, f"bad timestamp {stamp!r}", last_ts)
                continue
            last_ts = max(last_ts, ts)
            try:
                yield SearchEvent(user_id=user_id, ts=last_ts, query=query)
            except ValidationError as exc:
                yield Malformed(where, line, reason_of(exc), last_ts)
                continue
            search_ts, clicks = last_ts, 0
        elif search_ts is None:
            yield Malformed(where, line, "clicked URL without a usable query line above", last_ts)
        else:
            clicks += 1
            last_ts = max(last_ts, search_ts + clicks)
            host, text = url_parts(line)
            try:
                yield ClickEvent(
                    user_id=user_id,
                    ts=last_ts,
                    item_id=line.strip(),
                    item_text=text,
                    category=(host,) if host else (),
                )
            except ValidationError as exc:
                yield Malformed(where, line, reason_of(exc), last_ts)


def _parse_time(stamp: str) -> int | None:
    """``YYYY-MM-DD HH:MM:SS`` (read as UTC) to epoch ms; None when it is anything else."""
    stamp = stamp.strip()
    # fromisoformat is C and ~10x faster than strptime, but also takes other ISO shapes:
    # the length and separator checks keep it to the log's one format.
    if len(stamp) != 19 or stamp[10] != " ":
        return None
    try:
        moment = datetime.fromisoformat(stamp).replace(tzinfo=UTC)
    except ValueError:
        return None
    return int(moment.timestamp()) * 1000
