"""The gap guard on plain offsets: order kept, skipped records fetched again, real gaps let go."""

from __future__ import annotations

import pytest

from streams.gaps import GapGuard, Verdict

A, D, S, B, V = Verdict.APPLY, Verdict.DROP, Verdict.SEEK, Verdict.BEHIND, Verdict.VERIFY


def run(guard: GapGuard[str], offsets: list[tuple[str, int, float]]) -> list[Verdict]:
    return [guard.check(tp, offset, now) for tp, offset, now in offsets]


def test_in_order_records_are_applied_and_going_back_is_behind() -> None:
    # Going back without a rebalance is a re-delivery or a reset log: the worker tells which.
    guard: GapGuard[str] = GapGuard(committed=lambda tp: 10)
    assert run(guard, [("p", 10, 0), ("p", 11, 0), ("p", 9, 0), ("p", 12, 0)]) == [A, A, B, A]
    assert guard.due("p") == 13 and guard.seeks == guard.dropped == 0


def test_a_record_past_the_committed_offset_is_fetched_again() -> None:
    # The restart that lost a record: the consumer resumed at 514 and 515 came first.
    guard: GapGuard[str] = GapGuard(committed={"p": 514}.get)
    verdicts = run(guard, [("p", 515, 0.0), ("p", 516, 0.1), ("p", 514, 0.2), ("p", 515, 0.2)])
    assert verdicts == [S, D, A, A]
    assert guard.due("p") == 516 and guard.seeks == 1 and guard.dropped == 2


def test_partitions_are_independent_and_unknown_ones_start_anywhere() -> None:
    guard: GapGuard[str] = GapGuard(committed={"a": 5}.get)
    assert run(guard, [("b", 70, 0), ("a", 6, 0), ("b", 71, 0), ("a", 5, 0)]) == [A, S, A, A]


def test_a_real_gap_is_accepted_once_the_broker_says_so() -> None:
    guard: GapGuard[str] = GapGuard(committed=lambda tp: None, max_seeks=2, settle_s=1.0)
    run(guard, [("p", 0, 0), ("p", 1, 0)])
    # offset 2 is a commit marker: every fetch from 2 starts at 3
    verdicts = run(guard, [("p", 3, 0.0), ("p", 3, 0.5), ("p", 3, 1.5), ("p", 3, 3.0)])
    assert verdicts == [S, D, S, V]  # the seeks found it again: not proof, ask the broker
    assert run(guard, [("p", 3, 3.1), ("p", 4, 9.0)]) == [D, D]  # dropped while it answers
    assert guard.accepted == 0 and guard.due("p") == 2
    guard.accept("p", 3)  # the broker: the first record at or after 2 is 3
    assert guard.accepted == 1 and guard.due("p") == 3
    assert run(guard, [("p", 3, 9.1), ("p", 4, 9.2), ("p", 6, 9.3)]) == [A, A, S]  # a new gap
    with pytest.raises(ValueError, match="no gap"):
        guard.accept("p", 5)  # 5 is the offset due: nothing to skip


def test_a_gap_the_broker_still_holds_is_read_again_more_patiently() -> None:
    # A loaded machine: records fetched before each seek keep arriving past the settle time.
    guard: GapGuard[str] = GapGuard(committed={"p": 10}.get, max_seeks=2, settle_s=1.0)
    assert run(guard, [("p", 12, 0.0), ("p", 12, 1.5), ("p", 13, 3.0)]) == [S, S, V]
    guard.retry("p", now=3.5)  # the broker holds offset 10: never skip it
    assert guard.accepted == 0 and guard.due("p") == 10
    # the settle time is now 2 s: a record past the offset due within it is dropped, no seek
    assert run(guard, [("p", 14, 5.0), ("p", 15, 5.6), ("p", 10, 5.7)]) == [D, S, A]
    assert guard.due("p") == 11 and guard.accepted == 0


def test_no_seeks_means_gaps_are_accepted_at_once() -> None:
    guard: GapGuard[str] = GapGuard(committed=lambda tp: 0, max_seeks=0)
    assert run(guard, [("p", 3, 0)]) == [A]
    assert guard.accepted == 1


def test_forget_returns_to_the_committed_offset() -> None:
    committed = {"p": 0}
    guard: GapGuard[str] = GapGuard(committed=committed.get)
    run(guard, [("p", 0, 0), ("p", 1, 0)])
    committed["p"] = 2
    guard.forget(["p"])
    assert guard.due("p") is None
    assert run(guard, [("p", 3, 0)]) == [S]
    guard.forget()
    assert guard.due("p") is None


def test_bad_limits() -> None:
    with pytest.raises(ValueError, match="max_seeks"):
        GapGuard(committed=lambda tp: None, max_seeks=-1)
