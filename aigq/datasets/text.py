"""Deterministic text surrogates for items that come without a title."""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
# Path segments that say nothing about the page's topic.
_NOISE = frozenset(
    [
        "www",
        "html",
        "htm",
        "shtml",
        "php",
        "asp",
        "aspx",
        "jsp",
        "cgi",
        "cfm",
        "index",
        "default",
        "home",
        "http",
        "https",
        "com",
    ]
)
MAX_PATH_WORDS = 12


def url_host(url: str) -> str:
    """The URL's host without a leading ``www.``; empty when the URL has none."""
    return url_parts(url)[0]


def url_text(url: str) -> str:
    """``"newsobserver.com sports nba playoffs"``: the host, then the path's words."""
    return url_parts(url)[1]


def url_parts(url: str) -> tuple[str, str]:
    """``(host, text)`` of a URL from one parse: :func:`url_host` and :func:`url_text` together.

    Words are lower-cased, URL-unescaped, stripped of file extensions and numbers alone, and
    capped at :data:`MAX_PATH_WORDS` so a long tracking URL stays a short surrogate.
    """
    parts = urlsplit(url.strip())
    host = (parts.hostname or "").lower().removeprefix("www.")
    words = [
        w for w in _WORD.findall(unquote(parts.path).lower()) if w not in _NOISE and not w.isdigit()
    ][:MAX_PATH_WORDS]
    return host, " ".join([host, *words]).strip()
