"""Parsing generated text into hint queries, and keeping garbage out of the cache.

The model is trained to answer with :func:`generators.prompt.format_target`'s format: clean
queries, one per line. Sampled output drifts from it (numbered or bulleted lines, ``;;`` copied
from the prompt, echoed special tokens, a chat end marker, repeats), so :func:`parse_queries`
accepts those variants and keeps only what could be shown to a user: short, textual, not a
near-duplicate of an earlier query, in the model's order (most likely first), at most ``k``.

:func:`validate` parses a batch and counts what it dropped (:class:`OutputStats`). A text that
yields no valid query at all is *malformed* and gives ``[]``: a generator writes nothing for it
rather than garbage.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Literal

from aigq.safety import is_blocked
from generators.prompt import COPY_TOKEN, PromptError, clean_text

_NO_COPY = "\n\x00\n"  # a copy of nothing: a line that validation drops (counted as invalid)

# <search>, <1_day_ago>, <|im_end|>, </s>, <|endoftext|>: anything that looks like a token
_SPECIAL_PIECE = re.compile(r"<\|[^|\n]{0,64}\|>|</?[A-Za-z0-9_|/-]{1,64}>")
_SPLIT = re.compile(r"\n|\r|;;")
# "1. foo", "2) bar", "- baz", "* qux", "• quux"; not "2.5 inch" nor "3d printer"
_LIST_MARKER = re.compile(r"^\s*(?:\d{1,3}[.)]\s*(?!\d)|[-*•·]\s+)")
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
MIN_QUERY_CHARS = 2
MAX_WORD_RUN = 2
"""A query with one word more times in a row is a sampling loop ("flight flight flight ..."),
not a search: of AOL's 255,073 searches, 13 have a word 3 times in a row ("bye bye bye")."""


def _longest_run(words: Sequence[str]) -> int:
    """The most times one word occurs in a row."""
    best = run = 1
    for before, word in pairwise(words):
        run = run + 1 if word == before else 1
        best = max(best, run)
    return best


@dataclass(slots=True)
class OutputStats:
    """Counters over validated generations.

    ``lists``: texts seen; ``queries_kept``: queries returned; ``dropped_invalid``: non-empty
    pieces that were too short, too long or not text; ``dropped_duplicate``: near-duplicates of
    an earlier query of the same list; ``dropped_unsafe``: queries never shown as hints
    (:mod:`aigq.safety`); ``malformed_lists``: texts that gave no query at all.
    """

    lists: int = 0
    queries_kept: int = 0
    dropped_invalid: int = 0
    dropped_duplicate: int = 0
    dropped_unsafe: int = 0
    malformed_lists: int = 0

    def add(self, other: OutputStats) -> None:
        """Add ``other``'s counts to these, in place."""
        self.lists += other.lists
        self.queries_kept += other.queries_kept
        self.dropped_invalid += other.dropped_invalid
        self.dropped_duplicate += other.dropped_duplicate
        self.dropped_unsafe += other.dropped_unsafe
        self.malformed_lists += other.malformed_lists


def _check(k: int, max_chars: int, max_words: int, near_duplicate: float) -> None:
    if k < 1 or max_chars < MIN_QUERY_CHARS or max_words < 1:
        raise PromptError(
            f"need k >= 1, max_chars >= {MIN_QUERY_CHARS}, max_words >= 1; "
            f"got k={k}, max_chars={max_chars}, max_words={max_words}"
        )
    if not 0.0 < near_duplicate <= 1.0:
        raise PromptError(f"near_duplicate must be in (0, 1], got {near_duplicate}")


def _is_near_duplicate(words: frozenset[str], kept: list[frozenset[str]], limit: float) -> bool:
    for theirs in kept:
        shared = len(words & theirs)
        if shared and shared / (len(words) + len(theirs) - shared) >= limit:
            return True
    return False


def expand_copies(text: str, shown: Sequence[str]) -> str:
    """``text`` with each copy token (``<h2>``) replaced by that history query of the prompt
    (``shown``, :func:`generators.prompt.shown_history`) on a line of its own; a token beyond
    ``shown`` becomes a line that validation drops."""

    def copy(found: re.Match[str]) -> str:
        index = int(found.group(1))
        return f"\n{shown[index - 1]}\n" if 1 <= index <= len(shown) else _NO_COPY

    return COPY_TOKEN.sub(copy, text)


Verdict = Literal["kept", "empty", "invalid", "unsafe", "duplicate"]


class _Kept:
    """The queries one list has kept so far, to tell a near-duplicate."""

    def __init__(self) -> None:
        self.keys: set[str] = set()
        self.word_sets: list[frozenset[str]] = []

    def judge(
        self, piece: str, max_chars: int, max_words: int, near_duplicate: float
    ) -> tuple[str, Verdict]:
        """``piece`` cleaned, and what validation makes of it (kept pieces are remembered)."""
        piece = _LIST_MARKER.sub("", piece, count=1)
        if not piece.strip():
            return "", "empty"
        query = clean_text(piece, max_chars=sys.maxsize).lower()  # cleaned, never cut
        words = _WORD.findall(query)
        if (
            not words
            or len(query) < MIN_QUERY_CHARS
            or len(query) > max_chars
            or len(query.split()) > max_words
            or _longest_run(words) > MAX_WORD_RUN
        ):
            return query, "invalid"
        if is_blocked(query):
            return query, "unsafe"
        key = " ".join(words)
        word_set = frozenset(words)
        if key in self.keys or _is_near_duplicate(word_set, self.word_sets, near_duplicate):
            return query, "duplicate"
        self.keys.add(key)
        self.word_sets.append(word_set)
        return query, "kept"


def _pieces(text: str, shown: Sequence[str]) -> list[str]:
    return _SPLIT.split(_SPECIAL_PIECE.sub(" ", expand_copies(text, shown)))


def _parse(
    text: str,
    k: int,
    max_chars: int,
    max_words: int,
    near_duplicate: float,
    stats: OutputStats,
    shown: Sequence[str] = (),
) -> list[str]:
    out: list[str] = []
    kept = _Kept()
    for piece in _pieces(text, shown):
        if len(out) == k:
            break
        query, verdict = kept.judge(piece, max_chars, max_words, near_duplicate)
        if verdict == "kept":
            out.append(query)
        elif verdict == "invalid":
            stats.dropped_invalid += 1
        elif verdict == "unsafe":
            stats.dropped_unsafe += 1
        elif verdict == "duplicate":
            stats.dropped_duplicate += 1
    stats.queries_kept += len(out)
    return out


def line_verdicts(
    text: str,
    max_chars: int = 64,
    max_words: int = 10,
    near_duplicate: float = 0.8,
    shown: Sequence[str] = (),
) -> list[tuple[str, Verdict]]:
    """Each line of ``text`` (split on newlines only, the way a model writes its list) and what
    :func:`parse_queries` makes of it, with the same rules: the cleaned query and its verdict.

    A line is judged by its first non-empty piece (a copy token expanded, ``;;`` split); a
    line without one is ``"empty"``. So a line that mixes a copy token with other text
    (``weather <h1>``) counts as one query here where :func:`parse_queries` keeps two; the
    model's format puts a copy token alone on its line. What IL-GRPO rewards slot by slot
    (:mod:`training.grpo_rewards`): line ``j`` is the model's ``j``-th query.
    """
    _check(1, max_chars, max_words, near_duplicate)
    kept = _Kept()
    out: list[tuple[str, Verdict]] = []
    for line in text.split("\n"):
        verdict: tuple[str, Verdict] = ("", "empty")
        for piece in _pieces(line, shown):
            verdict = kept.judge(piece, max_chars, max_words, near_duplicate)
            if verdict[1] != "empty":
                break
        out.append(verdict)
    return out


def parse_queries(
    text: str,
    k: int = 10,
    max_chars: int = 64,
    max_words: int = 10,
    near_duplicate: float = 0.8,
    shown: Sequence[str] = (),
) -> list[str]:
    """The valid, distinct queries of one generated text, lowercase, in order, at most ``k``.

    Copy tokens (``<h2>``) become the prompt's history queries they point at (``shown``, see
    :func:`expand_copies`); lines are split on newlines and ``;;``; list markers (``1.``,
    ``2)``, ``-``) and anything else looking like a special token or chat marker
    (``<search>``, ``<|im_end|>``, ``</s>``) are removed; the rest is cleaned with
    :func:`~generators.prompt.clean_text`. A query is dropped
    when shorter than 2 characters, longer than ``max_chars`` characters or ``max_words`` words,
    without a letter or digit, with one word more than :data:`MAX_WORD_RUN` times in a row
    (a sampling loop), blocked (:mod:`aigq.safety`), or a near-duplicate of an earlier kept one
    (same words, or word Jaccard similarity >= ``near_duplicate``).
    """
    _check(k, max_chars, max_words, near_duplicate)
    return _parse(text, k, max_chars, max_words, near_duplicate, OutputStats(), shown)


def validate(
    texts: Sequence[str],
    k: int = 10,
    max_chars: int = 64,
    max_words: int = 10,
    near_duplicate: float = 0.8,
    shown: Sequence[Sequence[str]] | None = None,
) -> tuple[list[list[str]], OutputStats]:
    """Parse each generated text (see :func:`parse_queries`; ``shown``: each text's prompt's
    history queries, for its copy tokens) and count what was dropped.

    A text without a single valid query counts as malformed and gives ``[]``.
    """
    _check(k, max_chars, max_words, near_duplicate)
    if shown is not None and len(shown) != len(texts):
        raise PromptError(f"{len(texts)} texts but {len(shown)} history lists")
    stats = OutputStats()
    lists = []
    for i, text in enumerate(texts):
        queries = _parse(
            text, k, max_chars, max_words, near_duplicate, stats, shown[i] if shown else ()
        )
        stats.lists += 1
        if not queries:
            stats.malformed_lists += 1
        lists.append(queries)
    return lists, stats
