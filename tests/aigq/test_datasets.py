"""Dataset adapters: AOL and Best Buy parsing edge cases, the time merge, real-log sanity."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from aigq.datasets import Malformed, SourceStats
from aigq.datasets.aol import iter_aol, parse_user_lines
from aigq.datasets.base import merge_by_time
from aigq.datasets.bestbuy import iter_bestbuy, parse_rows
from aigq.datasets.sources import open_source
from aigq.datasets.text import url_host, url_text
from aigq.errors import DatasetError
from aigq.events import MAX_QUERY_CHARS, ClickEvent, SearchEvent

MAR_6 = 1_141_647_320_000  # 2006-03-06 12:15:20 UTC


def _aol(text: str, user: str = "42") -> list[SearchEvent | ClickEvent | Malformed]:
    return list(parse_user_lines(user, text.splitlines(keepends=True), origin="42.txt"))  # type: ignore[arg-type]


def test_aol_block_is_one_search_then_its_clicks_in_order() -> None:
    items = _aol(
        "ny times\t2006-03-06 12:15:20\n"
        "http://www.nytimes.com/\n"
        "http://www.nytimes.com/pages/sports/nba/index.html\n"
    )
    assert [type(i).__name__ for i in items] == ["SearchEvent", "ClickEvent", "ClickEvent"]
    search, first, second = items
    assert isinstance(search, SearchEvent) and isinstance(second, ClickEvent)
    assert (search.user_id, search.query, search.ts) == ("42", "ny times", MAR_6)
    assert [first.ts, second.ts] == [MAR_6 + 1, MAR_6 + 2]
    assert second.item_id == "http://www.nytimes.com/pages/sports/nba/index.html"
    assert second.item_text == "nytimes.com pages sports nba"
    assert second.category == ("nytimes.com",)


def test_aol_timestamps_never_go_backwards() -> None:
    items = _aol("later\t2006-03-06 12:15:20\nhttp://a.com/\n\nearlier\t2006-03-06 12:15:19\n")
    assert [i.ts for i in items] == [MAR_6, MAR_6 + 1, MAR_6 + 1]


def test_aol_malformed_lines_are_reported_not_raised() -> None:
    items = _aol(
        "http://orphan.com/\n"  # a URL before any query
        "\n"
        "bad time\t2006-13-45 99:00:00\n"
        "http://after-bad-time.com/\n"  # its anchor was unusable
        "\n"
        "\t2006-03-06 12:15:20\n"  # empty query
        "\n"
        f"{'q' * (MAX_QUERY_CHARS + 1)}\t2006-03-06 12:15:21\n"
        "\n"
        "fine\t2006-03-06 12:15:22\n"
    )
    bad = [i for i in items if isinstance(i, Malformed)]
    assert [b.origin for b in bad] == ["42.txt:1", "42.txt:3", "42.txt:4", "42.txt:6", "42.txt:8"]
    assert "without a usable query" in bad[0].reason
    assert "bad timestamp" in bad[1].reason
    assert bad[3].reason.startswith("query:")
    assert bad[4].reason.startswith("query:") and "1024" in bad[4].reason
    good = [i for i in items if not isinstance(i, Malformed)]
    assert [g.query for g in good if isinstance(g, SearchEvent)] == ["fine"]


def test_aol_unicode_and_crlf() -> None:
    items = _aol("café crème\t2006-03-06 12:15:20\r\nhttp://www.xn--caf-dma.fr/menü/\r\n")
    search, click = items
    assert isinstance(search, SearchEvent) and isinstance(click, ClickEvent)
    assert search.query == "café crème"
    assert click.item_text == "xn--caf-dma.fr menü"


@pytest.mark.parametrize(
    ("url", "host", "text"),
    [
        ("http://www.Example.COM/a/b.html", "example.com", "example.com a b"),
        ("http://site.org/2006/03/story%20here.php", "site.org", "site.org story here"),
        ("not a url", "", "not a url"),
        ("http://h.com/" + "/w" * 40, "h.com", "h.com " + " ".join(["w"] * 12)),
    ],
)
def test_url_surrogate(url: str, host: str, text: str) -> None:
    assert url_host(url) == host
    assert url_text(url) == text


def test_aol_folder_merge_orders_by_time_and_keeps_each_user_order(tmp_path: Path) -> None:
    (tmp_path / "1.txt").write_text(
        "a\t2006-03-06 12:00:00\nhttp://x.com/\n\nb\t2006-03-06 14:00:00\n"
    )
    (tmp_path / "2.txt").write_text("c\t2006-03-06 13:00:00\n\nd\t2006-03-06 13:00:00\n")
    items = list(iter_aol(tmp_path))
    assert [i.user_id for i in items if not isinstance(i, Malformed)] == ["1", "1", "2", "2", "1"]
    assert [i.ts for i in items] == sorted(i.ts for i in items)
    assert len(list(iter_aol(tmp_path, max_users=1))) == 3


def test_aol_missing_source_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no AOL user files"):
        list(iter_aol(tmp_path))
    with pytest.raises(DatasetError, match="neither a folder nor a file"):
        list(iter_aol(tmp_path / "nope"))


BB_HEADER = "user,sku,category,query,click_time,query_time\n"


def test_bestbuy_row_is_a_search_then_a_click() -> None:
    rows = (
        BB_HEADER
        + "u1,9854804,abcat0701002,gears of war 3,2011-09-14 12:46:28.66,2011-09-14 12:45:07.064\n"
    )
    search, click = parse_rows(rows.splitlines(keepends=True))
    assert isinstance(search, SearchEvent) and isinstance(click, ClickEvent)
    assert (search.query, search.ts) == ("gears of war 3", 1_316_004_307_064)
    assert (click.item_id, click.ts) == ("9854804", 1_316_004_388_660)
    assert click.category == ("Video Games", "Xbox 360 Games")
    assert click.item_text == "Xbox 360 Games sku 9854804"


def test_bestbuy_bad_rows_are_reported() -> None:
    rows = BB_HEADER + (
        "u1,1,abcat0701002,halo\n"  # short row
        "u2,2,abcat0701002,halo,2011-09-14 12:46:28,yesterday\n"  # bad query time
        "u3,3,abcat0701002,,2011-09-14 12:46:28,2011-09-14 12:45:00\n"  # empty query
        "u4,4,abcat0701002,halo,never,2011-09-14 12:45:00\n"  # bad click time: search kept
        "u5,5,other,halo,2011-09-14 12:40:00,2011-09-14 12:45:00\n"  # click before search
    )
    items = list(parse_rows(rows.splitlines(keepends=True), origin="t.csv"))
    bad = [i for i in items if isinstance(i, Malformed)]
    assert [b.origin for b in bad] == ["t.csv:2", "t.csv:3", "t.csv:4", "t.csv:5"]
    assert "expected 6 columns" in bad[0].reason
    assert bad[2].reason.startswith("query:")
    last_search, last_click = items[-2:]
    assert isinstance(last_click, ClickEvent) and last_click.ts == last_search.ts
    assert last_click.category == ("other",)


def test_bestbuy_wrong_header_is_an_error() -> None:
    with pytest.raises(DatasetError, match="header"):
        list(parse_rows(["a,b,c\n"]))


def test_bestbuy_folder_is_sorted_by_time(tmp_path: Path) -> None:
    (tmp_path / "train.csv").write_text(
        BB_HEADER + "u1,1,c,late,2011-09-15 00:00:01,2011-09-15 00:00:00\n"
    )
    (tmp_path / "test.csv").write_text(
        BB_HEADER + "u2,2,c,early,2011-09-14 00:00:01,2011-09-14 00:00:00\n"
    )
    items = list(iter_bestbuy(tmp_path))
    assert [i.user_id for i in items] == ["u2", "u2", "u1", "u1"]


def test_merge_keeps_each_stream_order_even_when_out_of_time_order() -> None:
    a = [Malformed("a", "", "", ts) for ts in (5, 1, 9)]  # not sorted: must stay as given
    b = [Malformed("b", "", "", ts) for ts in (2, 6)]
    merged = list(merge_by_time([a, b]))
    assert [m.ts for m in merged if m.origin == "a"] == [5, 1, 9]
    assert [m.ts for m in merged if m.origin == "b"] == [2, 6]


def test_source_stats_keep_a_few_samples() -> None:
    stats = SourceStats()
    for i in range(30):
        stats.count(Malformed(str(i), "", "bad"))
    stats.count(SearchEvent(user_id="u", ts=MAR_6, query="q"))
    assert (stats.events, stats.malformed, len(stats.samples)) == (1, 30, 20)


def test_unknown_source_name() -> None:
    with pytest.raises(DatasetError, match="unknown source 'kaggle'"):
        open_source("kaggle")


def test_real_aol_log(data_dir: Path) -> None:
    stats = SourceStats()
    users: Counter[str] = Counter()
    last: dict[str, int] = {}
    for item in iter_aol(data_dir / "aol", max_users=40):
        stats.count(item)
        if isinstance(item, Malformed):
            continue
        users[item.user_id] += 1
        assert item.ts >= last.get(item.user_id, 0)
        last[item.user_id] = item.ts
    assert len(users) == 40
    assert stats.events > 1_000
    assert stats.malformed < stats.events * 0.01


def test_real_bestbuy_log(data_dir: Path) -> None:
    stats = SourceStats()
    for item in iter_bestbuy(data_dir / "bestbuy"):
        stats.count(item)
    rows = 33_892 + 8_473
    # Two events a row; a few rows lack a usable query or time.
    assert rows * 2 * 0.95 < stats.events <= rows * 2
    assert stats.malformed < rows * 0.05
