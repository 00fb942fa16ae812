"""The generator's pending set and offset ledger: pure, driven with plain values."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka.structs import TopicPartition

from aigq.events import RegenerationRequest
from generators.pending import Entry, OffsetLedger, PendingSet, Throughput
from generators.requests import Source

TS = 1_767_225_600_000
TP0, TP1 = TopicPartition("t.regenerate", 0), TopicPartition("t.regenerate", 1)


def _entry(user: str, version: int = 1, shift: float = 0.5, at_s: float = 0.0, **kw: Any) -> Entry:
    request = RegenerationRequest(
        user_id=user,
        version=version,
        reason="drift",
        shift=shift,
        event_ts=TS,
        created_ts=TS,
        fingerprint="fp",
        recent=(),
        profile=(),
    )
    tp, offset = kw.get("tp", TP0), kw.get("offset", version)
    return Entry(
        request, Source(f"{tp.topic}/{tp.partition}@{offset}", b"x"), tp, offset, 100, at_s
    )


def _users(entries: list[Entry]) -> list[str]:
    return [e.request.user_id for e in entries]


def test_one_request_per_user_the_newest_wins_and_the_other_is_given_back() -> None:
    queue = PendingSet()
    first = _entry("a", version=1)
    assert queue.offer(first).displaced is None
    newer = _entry("a", version=2)
    offered = queue.offer(newer)
    assert offered.displaced is first and offered.superseded is None
    older = _entry("a", version=1, offset=9)
    assert queue.offer(older).superseded is older  # a redelivered older one
    assert len(queue) == 1 and queue.bytes == 100
    assert queue.take(10) == [newer] and len(queue) == 0 and queue.bytes == 0


def test_a_request_no_newer_than_one_in_flight_is_superseded_at_once() -> None:
    queue = PendingSet()
    same = _entry("a", version=3)
    assert queue.offer(same, in_flight=same.request.order).superseded is same
    newer = _entry("a", version=4)
    assert queue.offer(newer, in_flight=same.request.order).superseded is None
    assert queue.take(1) == [newer]


def test_strong_shifts_first_and_waiting_outranks_shift_after_aging_s() -> None:
    queue = PendingSet(aging_s=5.0)
    queue.offer(_entry("weak", shift=0.1, at_s=100.0))
    queue.offer(_entry("strong", shift=0.9, at_s=100.0))
    queue.offer(_entry("cold", shift=1.0, at_s=100.5))
    assert _users(queue.take(2)) == ["strong", "cold"]  # 0.9 vs 1.0 - 0.5/5
    queue.offer(_entry("old-weak", shift=0.0, at_s=90.0))  # waited 10 s more: +2 points
    queue.offer(_entry("new-strong", shift=1.0, at_s=100.0))
    assert _users(queue.take(5)) == ["old-weak", "new-strong", "weak"]


def test_fifo_serves_in_arrival_order_whatever_the_shift() -> None:
    queue = PendingSet(order="fifo")
    for user, shift in (("a", 0.1), ("b", 1.0), ("c", 0.5)):
        queue.offer(_entry(user, shift=shift))
    queue.offer(_entry("a", version=2, shift=0.9))  # replaces a: to the back of the line
    assert _users(queue.take(10)) == ["b", "c", "a"]


def test_the_set_is_bounded_by_count_and_bytes() -> None:
    queue = PendingSet(max_requests=2, max_bytes=250)
    queue.offer(_entry("a"))
    assert not queue.full
    queue.offer(_entry("b"))
    assert queue.full
    queue.take(1)
    assert not queue.full
    queue = PendingSet(max_bytes=150)
    queue.offer(_entry("a"))
    queue.offer(_entry("b"))
    assert queue.full and queue.bytes == 200
    with pytest.raises(ValueError, match="aging_s"):
        PendingSet(aging_s=0)


def test_replacing_a_user_many_times_keeps_the_heap_small() -> None:
    queue = PendingSet()
    for version in range(1, 2_001):
        queue.offer(_entry("a", version=version))
    assert len(queue._heap) <= 4 * 64 + 1
    [last] = queue.take(10)
    assert last.request.version == 2_000


def test_dropping_a_revoked_partition_forgets_its_requests() -> None:
    queue = PendingSet()
    queue.offer(_entry("a", tp=TP0))
    queue.offer(_entry("b", tp=TP1))
    assert _users(queue.drop_partitions({TP0})) == ["a"]
    assert _users(queue.take(10)) == ["b"]


def test_the_ledger_commits_up_to_the_lowest_unfinished_offset() -> None:
    ledger = OffsetLedger()
    for offset in (10, 11, 12):
        ledger.take(TP0, offset)
    ledger.take(TP1, 5)
    assert ledger.committable() == {TP0: 10, TP1: 5}
    ledger.committed({TP0: 10, TP1: 5})
    assert ledger.committable() == {}  # nothing moved
    ledger.finish(TP0, 11)  # superseded: done, but 10 is still pending
    assert ledger.committable() == {}
    ledger.finish(TP0, 10)
    assert ledger.committable() == {TP0: 12}
    ledger.finish(TP0, 12)
    ledger.finish(TP1, 5)
    assert ledger.committable() == {TP0: 13, TP1: 6}
    assert ledger.unfinished() == 0


def test_a_forgotten_partition_is_not_committed_and_late_finishes_are_ignored() -> None:
    ledger = OffsetLedger()
    ledger.take(TP0, 1)
    ledger.take(TP1, 1)
    ledger.forget({TP0})
    ledger.finish(TP0, 1)  # a batch in flight at the revoke ends later
    assert ledger.committable() == {TP1: 1}
    ledger.take(TP0, 7)  # handed back to us: counts from what it reads now
    assert ledger.committable() == {TP0: 7, TP1: 1}


def test_throughput_counts_lists_per_busy_second_over_its_window() -> None:
    meter = Throughput(window_s=10.0, initial=7.0)
    assert meter.rate() == 7.0
    meter.started(0.0)
    meter.finished(2.0, 20, still_busy=False)  # 20 lists in 2 busy seconds
    assert meter.rate() == 10.0
    meter.started(100.0)  # idle for 98 s: not counted
    meter.finished(101.0, 30, still_busy=True)
    meter.finished(102.0, 30, still_busy=False)
    # the window keeps the sample before it as its start: 60 lists in 2 busy seconds
    assert meter.rate() == 30.0
