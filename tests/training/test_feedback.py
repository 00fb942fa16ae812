"""The trainer's feedback store: bounded segments, flush-before-commit, two clocks."""

from __future__ import annotations

from pathlib import Path

import pytest

from aigq.codec import encode
from aigq.events import HintExposureEvent, SearchEvent, ShownQuery
from training import TrainingError
from training.feedback import FeedbackStore, Stored, read_events, restamp
from training.gate import not_worse

T0 = 1_147_651_200_000  # 2006-05-15 (a replayed AOL time)
NOW = 1_796_000_000_000  # 2026-ish (the serving clock)


def _search(user: str, query: str, ts: int) -> SearchEvent:
    return SearchEvent(user_id=user, ts=ts, query=query)


def _exposure(user: str, ts: int) -> HintExposureEvent:
    shown = (ShownQuery(query="maps", source="history", position=0),)
    return HintExposureEvent(user_id=user, ts=ts, request_id="r1", shown=shown)


def test_records_come_back_in_order_with_their_arrival_time(tmp_path: Path) -> None:
    with FeedbackStore(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16) as store:
        store.append(NOW + 1, encode(_search("u1", "maps", T0)))
        store.append(NOW + 2, encode(_exposure("u1", NOW + 2)))
        back = list(store.read())
        assert [r.at for r in back] == [NOW + 1, NOW + 2]
        assert back[0].event == _search("u1", "maps", T0)
        assert store.counts["stored"] == 2


def test_the_store_is_bounded_by_dropping_whole_oldest_segments(tmp_path: Path) -> None:
    with FeedbackStore(tmp_path, max_bytes=4096, segment_bytes=1024) as store:
        for i in range(400):
            store.append(NOW + i, encode(_search("u1", f"query {i}", T0 + i)))
        store.flush()
        assert store.bytes() <= 4096 + 1024 + 200  # the bound, the open segment, one last line
        kept = list(store.read())
        assert store.counts["evicted"] + len(kept) == 400  # every record kept or counted
        assert kept[-1].event.query == "query 399"  # type: ignore[union-attr]
        assert [r.at for r in kept] == sorted(r.at for r in kept)  # the oldest went first


def test_a_restart_opens_a_new_segment_and_keeps_the_old(tmp_path: Path) -> None:
    with FeedbackStore(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16) as first:
        first.append(NOW, encode(_search("u1", "maps", T0)))
    with FeedbackStore(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16) as second:
        second.append(NOW + 1, encode(_search("u2", "news", T0)))
        assert len(second.segments()) == 2
        assert [r.event.user_id for r in second.read()] == ["u1", "u2"]


def test_a_torn_or_foreign_line_is_skipped_and_counted(tmp_path: Path) -> None:
    with FeedbackStore(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16) as store:
        store.append(NOW, encode(_search("u1", "maps", T0)))
        store.append(NOW + 1, b'{"type": "search"}')  # no schema takes it
        store.flush()
        with store.segments()[-1].open("ab") as f:
            f.write(b'{"at": 1, "event": {"ty')  # a crash mid-line
        assert len(list(store.read())) == 1
        assert store.counts["unreadable"] == 2


def test_a_snapshot_does_not_see_later_appends(tmp_path: Path) -> None:
    with FeedbackStore(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16) as store:
        store.append(NOW, encode(_search("u1", "maps", T0)))
        snapshot = store.snapshot()
        store.append(NOW + 1, encode(_search("u1", "news", T0)))
        store.flush()
        assert len(list(store.read_snapshot(snapshot))) == 1


def test_repeats_are_dropped_and_events_move_to_the_arrival_clock() -> None:
    search = _search("u1", "maps", T0)
    exposure = _exposure("u1", NOW + 5)
    stored = [Stored(NOW + 9, search), Stored(NOW + 5, exposure), Stored(NOW + 9, search)]
    records = read_events(stored)
    assert [r.at for r in records] == [NOW + 5, NOW + 9]
    events = restamp(records)
    assert [e.ts for e in events] == [NOW + 5, NOW + 9]  # the search now follows the exposure


def test_store_bounds_are_checked(tmp_path: Path) -> None:
    with pytest.raises(TrainingError):
        FeedbackStore(tmp_path, max_bytes=100, segment_bytes=1024)


def test_the_gate_publishes_what_is_not_worse() -> None:
    assert not_worse(0.30, 0.30, 0.0)
    assert not not_worse(0.29, 0.30, 0.0)
    assert not_worse(0.29, 0.30, 0.01)
