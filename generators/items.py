"""Item-to-text: the short text surrogate a clicked item stands as in a prompt.

The paper (context engineering) turns every item into a few words so that a behaviour sequence
is plain text; it fine-tunes a 32B model for this, and says any deterministic surrogate of
"category leaf + trimmed title" is a valid stand-in. :class:`SurrogateItemText` is that
stand-in. Click logs such as AOL's carry a URL or a host instead of a title
(``http://www.ebay.com/itm/...``, ``www.weather.com``): for those the host's meaningful words and
the path's words play the title.

Anything callable as ``(text, category) -> str`` satisfies :class:`ItemText`, so an LLM surrogate
(a model that summarises title, category, attributes and tags) can replace the deterministic one
without touching the prompt builder. The output is still passed through
:func:`generators.prompt.clean_text` by the builder, so a surrogate need not be prompt-safe.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
# a bare host (optionally followed by a path): labels of letters/digits/hyphens, a TLD of letters
_HOST = re.compile(
    r"^(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+[a-z]{2,24}\.?(?::\d+)?(?:[/?#]\S*)?$",
    re.IGNORECASE,
)
_ALNUM = re.compile(r"[^\W_]+", re.UNICODE)
_EDGE_PUNCT = re.compile(r"^[\W_]+|[\W_]+$", re.UNICODE)

# Host labels and path words that say nothing about the item.
_URL_STOPWORDS = frozenset(
    {
        "www",
        "www1",
        "www2",
        "www3",
        "m",
        "mobile",
        "http",
        "https",
        "com",
        "net",
        "org",
        "edu",
        "gov",
        "mil",
        "int",
        "info",
        "biz",
        "co",
        "ac",
        "html",
        "htm",
        "shtml",
        "php",
        "asp",
        "aspx",
        "jsp",
        "cgi",
        "bin",
        "index",
        "default",
    }
)
_MAX_URL_WORD_CHARS = 20
_MIN_ID_DIGITS = 5  # "b08ktz8249", "a1b2c3d4e5" are ids; "ps5", "rtx4090" are words


class ItemText(Protocol):
    """Turns a clicked item's text (title, URL or host) and ``>``-joined category path into
    a short text surrogate. Implementations must be deterministic for a given input."""

    def __call__(self, text: str, category: str) -> str: ...


def looks_like_url(text: str) -> bool:
    """True for ``scheme://...``, ``www.host...`` and bare hosts such as ``weather.com/radar``."""
    text = text.strip()
    if not text or any(ch.isspace() for ch in text):
        return False
    if _SCHEME.match(text) or text.lower().startswith("www."):
        return True
    return _HOST.match(text) is not None


def url_words(text: str) -> list[str]:
    """The meaningful words of a URL or host: host labels minus ``www``/TLD-ish parts, then the
    path's words (digits-only and very long tokens dropped), lowercase, in order."""
    text = text.strip()
    if not _SCHEME.match(text):
        text = "http://" + text
    try:
        parts = urlsplit(text)
    except ValueError:  # e.g. an invalid IPv6 host: fall back to splitting the whole string
        return _keep_url_words(_ALNUM.findall(text.lower()))
    host = (parts.hostname or "").lower().rstrip(".")
    labels = host.split(".") if host else []
    if len(labels) > 1:
        labels = labels[:-1]  # the TLD
    host_words = [w for label in labels for w in _ALNUM.findall(label)]
    return _keep_url_words(host_words + _ALNUM.findall(parts.path.lower()))


def _keep_url_words(tokens: list[str]) -> list[str]:
    return [
        t
        for t in tokens
        if t not in _URL_STOPWORDS
        and 1 < len(t) <= _MAX_URL_WORD_CHARS
        and sum(ch.isdigit() for ch in t) < _MIN_ID_DIGITS
        and not t.isdigit()
    ]


def title_words(text: str) -> list[str]:
    """Whitespace-separated words, surrounding punctuation trimmed (``"Shoes,"`` -> ``Shoes``)."""
    out = []
    for raw in text.split():
        word = _EDGE_PUNCT.sub("", raw)
        if word:
            out.append(word)
    return out


def _key(word: str) -> str:
    return "".join(_ALNUM.findall(word.lower()))


@dataclass(frozen=True, slots=True)
class SurrogateItemText:
    """Deterministic surrogate: category leaf + trimmed title words, at most ``max_words`` words.

    ``SurrogateItemText()("Nike Air Zoom Pegasus 40 Running Shoes", "Sports>Running Shoes")``
    gives ``"Running Shoes Nike Air Zoom Pegasus"``. Title words already said by the leaf are
    dropped, and so are repeated words. An LLM surrogate can replace this behind
    :class:`ItemText`.
    """

    max_words: int = 6

    def __post_init__(self) -> None:
        if self.max_words < 1:
            raise ValueError(f"max_words must be >= 1, got {self.max_words}")

    def __call__(self, text: str, category: str) -> str:
        leaf = category.rsplit(">", 1)[-1].strip() if category else ""
        # A web log's "category" is the clicked host: say it as its words ("microsoft").
        leaf_words = url_words(leaf) if looks_like_url(leaf) else title_words(leaf)
        seen = {_key(w) for w in leaf_words}
        body = url_words(text) if looks_like_url(text) else title_words(text)
        words = list(leaf_words)
        for word in body:
            key = _key(word)
            if key and key in seen:
                continue
            seen.add(key)
            words.append(word)
        return " ".join(words[: self.max_words])
