"""Partition marks and the verdict on what the broker holds at a marked offset (pure)."""

from __future__ import annotations

from types import SimpleNamespace

from streams.resets import Found, Mark, checksum, is_mark, mark_key, verdict


def test_marks_round_trip_and_are_told_from_session_keys() -> None:
    message = SimpleNamespace(offset=41, timestamp=1_767_225_600.5, value=b'{"a":1}')
    mark = Mark.of(message, epoch=2)
    assert mark == Mark(2, 41, 1_767_225_600_500, checksum(b'{"a":1}'))
    assert Mark.from_bytes(mark.to_bytes()) == mark
    assert is_mark(mark_key("aigq.search", 3)) and not is_mark(b"u42") and not is_mark(None)


def test_the_same_record_at_the_mark_is_the_same_log() -> None:
    mark = Mark(0, 100, 5_000, 77)
    assert verdict(mark, (100, 5_000, 77), start=0) is Found.SAME


def test_another_record_or_none_at_the_mark_is_a_new_log() -> None:
    mark = Mark(0, 100, 5_000, 77)
    assert verdict(mark, (100, 5_000, 78), start=0) is Found.OTHER  # other bytes
    assert verdict(mark, (100, 6_000, 77), start=0) is Found.OTHER  # other time
    assert verdict(mark, (101, 5_000, 77), start=0) is Found.OTHER  # the offset is not there
    assert verdict(mark, None, start=0) is Found.OTHER  # the log ends before it


def test_a_mark_retention_deleted_cannot_be_told() -> None:
    assert verdict(Mark(0, 100, 5_000, 77), None, start=200) is Found.UNKNOWN
