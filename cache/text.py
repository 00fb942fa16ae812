"""The one text normaliser of the read path: what "the same query" and "the same trigger" mean.

Two queries are near-duplicates when they differ only in case, Unicode compatibility form or
whitespace ("Running  Shoes" and "running shoes"). The same normal form is the text part of a
trigger key, so the session agents (which record triggers) and the offline x2q builder (which
writes the index) meet on one key without agreeing on anything else.
"""

from __future__ import annotations

import unicodedata

MAX_KEY_CHARS = 200  # a trigger's text in a Redis key is cut to this many characters


def normalize(text: str, max_chars: int | None = None) -> str:
    """NFKC, case-folded, whitespace runs collapsed to one space, stripped; cut to ``max_chars``."""
    if text.isascii():  # NFKC leaves ASCII alone and casefold is lower(): the common case
        folded = " ".join(text.lower().split())
    else:
        folded = " ".join(unicodedata.normalize("NFKC", text).casefold().split())
    if max_chars is not None and len(folded) > max_chars:
        folded = folded[:max_chars].rstrip()
    return folded


_SEEN: dict[str, str] = {}
_SEEN_MAX = 65_536


def normalize_cached(text: str) -> str:
    """:func:`normalize` with a bounded memo: hint queries repeat across users and requests.

    The memo is emptied when it reaches 65,536 entries, so it never grows without bound.
    """
    key = _SEEN.get(text)
    if key is None:
        key = normalize(text)
        if len(_SEEN) >= _SEEN_MAX:
            _SEEN.clear()
        _SEEN[text] = key
    return key
