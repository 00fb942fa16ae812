"""Item-to-text: the deterministic category-leaf + trimmed-title surrogate."""

from __future__ import annotations

import pytest

from generators.items import ItemText, SurrogateItemText, looks_like_url, url_words

SURROGATE = SurrogateItemText()


def test_leaf_then_title_words_capped() -> None:
    out = SURROGATE("Nike Air Zoom Pegasus 40 Running Shoes, Men's", "Sports>Running Shoes")
    assert out == "Running Shoes Nike Air Zoom Pegasus"
    assert len(out.split()) == 6


def test_title_words_repeated_from_leaf_are_dropped() -> None:
    assert SURROGATE("phones: Apple iPhone 17 phone", "Electronics>Phones") == (
        "Phones Apple iPhone 17 phone"
    )


def test_no_category_keeps_title_only() -> None:
    assert SURROGATE("  hand-woven   sachet  ", "") == "hand-woven sachet"


def test_max_words_is_respected_and_validated() -> None:
    assert SurrogateItemText(max_words=2)("a b c d", "x>y") == "y a"
    with pytest.raises(ValueError, match="max_words"):
        SurrogateItemText(max_words=0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("http://www.ebay.com/itm/vintage-camera-lens/123456789", "ebay itm vintage camera lens"),
        ("www.weather.com", "weather"),
        ("newegg.com/rtx4090-ps5", "newegg rtx4090 ps5"),
        ("https://m.espn.go.com/nfl/scores.html", "espn go nfl scores"),
        ("amazon.co.uk/Kindle-Paperwhite/dp/B08KTZ8249", "amazon kindle paperwhite dp"),
        ("http://192.168.0.1/", ""),
    ],
)
def test_url_words(text: str, expected: str) -> None:
    assert looks_like_url(text)
    assert " ".join(url_words(text)) == expected


def test_url_click_uses_host_and_path_words_and_drops_very_long_tokens() -> None:
    token = "x" * 40
    text = f"http://www.homedepot.com/p/cordless-drill/{token}?id=99"
    assert SURROGATE(text, "Tools>Drills") == "Drills homedepot cordless drill"


@pytest.mark.parametrize("text", ["running shoes", "3.5 inch floppy", "e.g. this", "iPhone17", ""])
def test_plain_titles_are_not_urls(text: str) -> None:
    assert not looks_like_url(text)


def test_surrogate_is_deterministic_and_satisfies_protocol() -> None:
    def upper(text: str, category: str) -> str:
        return text.upper()

    implementations: list[ItemText] = [SURROGATE, SurrogateItemText(max_words=3), upper]
    for impl in implementations:
        assert impl("www.weather.com", "News>Weather") == impl("www.weather.com", "News>Weather")
    assert SURROGATE("www.weather.com", "News>Weather") == "Weather"
