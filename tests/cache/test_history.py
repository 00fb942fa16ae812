"""The search-history fold and its Redis store: the pure table, then the round trip."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from cache.errors import CorruptEntryError
from cache.history import MAX_HISTORY, TOP_STORED, add_search, fold, top_queries
from cache.history_store import STORED, HistoryStore, decode_history
from cache.text import MAX_KEY_CHARS

TS = 1_700_000_000_000


def test_fold_counts_normalised_queries_and_keeps_the_newest_time() -> None:
    history = fold([("Running  Shoes", TS), ("rain jacket", TS + 1), ("running shoes", TS + 2)])
    assert history == {"running shoes": [2, TS + 2], "rain jacket": [1, TS + 1]}
    add_search(history, "running shoes", TS - 5)  # an older event: the count, not the time
    assert history["running shoes"] == [3, TS + 2]
    add_search(history, "   ", TS + 3)  # nothing left once normalised: ignored
    assert len(history) == 2


def test_top_queries_most_searched_then_most_recent() -> None:
    history = fold([("a", TS), ("b", TS + 1), ("c", TS + 2), ("a", TS + 3), ("d", TS + 4)])
    assert top_queries(history, 3) == ["a", "d", "c"]
    assert top_queries(history, 10) == ["a", "d", "c", "b"]
    assert top_queries({}, 5) == []


def test_an_old_habit_fades_behind_a_fresh_one() -> None:
    day = 24 * 3_600_000
    history = fold(
        [("old habit", TS + i) for i in range(3)]  # 3 searches, 90 days before the newest
        + [("recent pair", TS + 80 * day), ("recent pair", TS + 80 * day + 1)]
        + [("yesterday", TS + 89 * day), ("today", TS + 90 * day)]
    )
    # strength = count * 2^(-age / 14 days): 3 * 2^(-90/14) = 0.04 < 1 (a one-off, today)
    assert top_queries(history, 4) == ["recent pair", "today", "yesterday", "old habit"]
    # a clock 80 years ahead only ages the others (the exponent is never positive)
    add_search(history, "future", TS + 80 * 365 * day)
    assert top_queries(history, 1) == ["future"]
    assert len(top_queries(history, 10)) == 5


def test_a_full_table_evicts_the_weakest_and_frequent_queries_survive() -> None:
    searches = [("kept", TS), ("kept", TS + 1)]
    searches += [(f"once {i}", TS + 10 + i) for i in range(50)]
    history = fold(searches, keep=4)
    assert len(history) == 4
    assert history["kept"] == [2, TS + 1]
    assert {"once 47", "once 48", "once 49"} <= set(history)  # the newest one-offs
    assert len(fold((f"q{i}", i) for i in range(500))) == MAX_HISTORY


def test_a_long_query_is_cut_so_a_table_is_bounded_in_bytes() -> None:
    history = fold([("x" * 5_000, TS)])
    assert [len(q) for q in history] == [MAX_KEY_CHARS]


def test_decode_history_refuses_what_is_not_a_list_of_strings() -> None:
    assert decode_history(b'["a", "b"]') == ["a", "b"]
    for raw in (b"{", b'{"a": 1}', b'["a", 1]'):
        with pytest.raises(CorruptEntryError, match="history entry"):
            decode_history(raw)


@pytest.mark.integration
@pytest.mark.asyncio
async def test_store_round_trip_replaces_whole_and_expires(redis: tuple[Redis, str]) -> None:
    client, prefix = redis
    store = HistoryStore(client, prefix=prefix, ttl_s=100)
    many = [(f"u{i}", [f"query {i}", "shared"]) for i in range(2_500)]  # three script calls
    assert await store.write_many([*many, ("empty", [])]) == 2_500
    assert await store.read("u7") == ["query 7", "shared"]
    assert await store.read("empty") == []  # no queries: nothing written
    assert 0 < await client.ttl(store.key("u7")) <= 100
    top = [f"q{i}" for i in range(TOP_STORED + 5)]
    await store.write_many([("u7", top)])  # replaced whole, cut to what is stored
    assert await store.read("u7") == top[:STORED]
    assert await store.read("u7", 3) == top[:3]
    with pytest.raises(ValueError, match="sequence of str"):
        await store.write_many([("u1", "not a list")])
