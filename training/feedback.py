"""The trainer's feedback store: the behaviour and feedback topics, kept on disk, bounded.

What ``aigq trainer`` consumes (searches, clicks, hint exposures, hint clicks) is appended
here as JSON lines ``{"at": <arrival ms>, "event": <the record as it was on the topic>}`` in
numbered segment files (``seg-000001.jsonl``...). A segment is closed at ``segment_bytes``;
when the closed segments together pass ``max_bytes`` the oldest are deleted, whole, and what
they held is counted (``evicted``): the store keeps the newest feedback and never grows past
about ``max_bytes + segment_bytes``. :meth:`FeedbackStore.flush` writes and fsyncs what was
appended: the trainer commits its Kafka offsets only after it, so a crash loses nothing it
acknowledged (a record may be stored twice after one: every reader de-duplicates exact
repeats, :func:`read_events`).

**Two clocks.** ``at`` is when the record entered Kafka (its record timestamp). Live traffic
has event time = arrival time; a replayed log (AOL from 2006) does not, while the read API
stamps exposures with the wall clock. Training on feedback therefore orders a user's events by
``at`` (:func:`restamp`), the one clock every record shares; evaluating the generator on a
user's last search day uses the events' own times.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import orjson

from aigq.codec import decode
from aigq.errors import EventError
from training import TrainingError
from training.samples import AnyEvent

_SEGMENT = re.compile(r"seg-(\d{6,})\.jsonl")


@dataclass(frozen=True)
class Stored:
    """One stored record: when it arrived (UTC ms) and the event."""

    at: int
    event: AnyEvent


class FeedbackStore:
    """Append-only JSON-lines segments under ``root``, bounded by ``max_bytes``."""

    def __init__(self, root: Path, max_bytes: int, segment_bytes: int = 16 << 20) -> None:
        if segment_bytes < 1024 or max_bytes < segment_bytes:
            raise TrainingError("need segment_bytes >= 1024 and max_bytes >= segment_bytes")
        self.root = root
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.counts: Counter[str] = Counter()
        root.mkdir(parents=True, exist_ok=True)
        numbers = self._numbers()
        self._number = numbers[-1] + 1 if numbers else 1  # a restart opens a new segment
        self._file: IO[bytes] | None = None
        self._size = 0

    def _numbers(self) -> list[int]:
        found = (_SEGMENT.fullmatch(p.name) for p in self.root.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def _path(self, number: int) -> Path:
        return self.root / f"seg-{number:06d}.jsonl"

    def segments(self) -> list[Path]:
        """Every segment, oldest first (the open one last)."""
        return [self._path(n) for n in self._numbers()]

    def append(self, at_ms: int, raw: bytes) -> None:
        """Store one record as it came off the topic (``raw``: its JSON bytes)."""
        if self._file is None:
            self._file = self._path(self._number).open("ab")
            self._size = self._file.tell()
        line = b'{"at":%d,"event":%s}\n' % (at_ms, raw)
        self._file.write(line)
        self._size += len(line)
        self.counts["stored"] += 1
        if self._size >= self.segment_bytes:
            self._close()
            self._number += 1
            self._evict()

    def flush(self) -> None:
        """Make what was appended durable (before the offsets are committed)."""
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())

    def close(self) -> None:
        self._close()

    def __enter__(self) -> FeedbackStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self._close()

    def _close(self) -> None:
        if self._file is not None:
            self.flush()
            self._file.close()
            self._file = None

    def _evict(self) -> None:
        """Delete the oldest closed segments while they pass ``max_bytes``."""
        closed = [p for p in self.segments() if p != self._path(self._number)]
        total = sum(p.stat().st_size for p in closed)
        for path in closed:
            if total <= self.max_bytes:
                break
            size = path.stat().st_size
            with path.open("rb") as f:
                self.counts["evicted"] += sum(1 for _ in f)
            path.unlink()
            total -= size

    def bytes(self) -> int:
        return sum(p.stat().st_size for p in self.segments())

    def read(self) -> Iterator[Stored]:
        """Everything stored, oldest segment first."""
        return self.read_snapshot(self.snapshot())

    def snapshot(self) -> list[tuple[Path, int]]:
        """Every segment with its size now, after a flush: what :meth:`read_snapshot` reads,
        in another thread, while appends go on (a line written after it is not read)."""
        self.flush()
        out = []
        for path in self.segments():
            try:
                out.append((path, path.stat().st_size))
            except FileNotFoundError:
                continue
        return out

    def read_snapshot(self, snapshot: Iterable[tuple[Path, int]]) -> Iterator[Stored]:
        for path, size in snapshot:
            yield from read_segment(path, self.counts, size)


def read_segment(path: Path, counts: Counter[str], size: int | None = None) -> Iterator[Stored]:
    """A segment's records (its first ``size`` bytes); a line that does not decode (cut by a
    crash, or a record no event schema takes) is skipped and counted in
    ``counts["unreadable"]``."""
    try:
        handle = path.open("rb")
    except FileNotFoundError:  # evicted meanwhile
        return
    with handle:
        data = handle.read() if size is None else handle.read(size)
        for line in data.splitlines():
            try:
                obj = orjson.loads(line)
                event = decode(orjson.dumps(obj["event"]))
                at = int(obj["at"])
            except (orjson.JSONDecodeError, EventError, KeyError, TypeError, ValueError):
                counts["unreadable"] += 1
                continue
            yield Stored(at, event)


def read_events(stored: Iterable[Stored]) -> list[Stored]:
    """The records without exact repeats (a record stored again after a crash), in arrival
    order (stable: records that arrived in the same millisecond keep their order)."""
    seen: set[tuple[int, str, str]] = set()
    out: list[Stored] = []
    for record in stored:
        key = (record.at, record.event.user_id, record.event.model_dump_json())
        if key not in seen:
            seen.add(key)
            out.append(record)
    out.sort(key=lambda r: r.at)
    return out


def restamp(stored: Iterable[Stored]) -> list[AnyEvent]:
    """The events on the arrival clock: each one's ``ts`` replaced by its ``at`` (see the
    module doc), in arrival order."""
    return [r.event.model_copy(update={"ts": r.at}) for r in stored]
