"""The prompt builder: a user's profile and recent behaviours as AIGQ-Direct's input text.

Two renderings of the same information (paper, "Context engineering"):

- :func:`compressed_prompt`, the one the model is trained and served on. Small-vocabulary fields
  (behaviour index, time bucket, behaviour kind) are dedicated special tokens added to the
  tokenizer (:data:`SPECIAL_TOKENS`, see :mod:`generators.tokens`), so
  ``1 | 1 day ago | search | iPhone17`` becomes ``<1><1_day_ago><search> iPhone17``, and the
  instruction is pruned to a minimum because fine-tuning teaches the task.
- :func:`verbose_prompt`, the uncompressed form, kept only to measure the compression.

Prompt safety: every piece of user-supplied text (queries, item titles, category names) goes
through :func:`clean_text`, which removes control characters, angle brackets and the prompt's
structural separators, and caps the length. A query can therefore never forge a special token
(``<search>``), a chat marker (``<|im_end|>``), the sequence's end (``}``), a verbose
prompt's field separator (``|``) or a new line.

:func:`format_target` is the model's output format (the trainer's labels); the parser in
:mod:`generators.output` accepts exactly it.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

from aigq.errors import AigqError
from generators.items import ItemText, SurrogateItemText, looks_like_url, url_words

Behaviour = tuple[int, str, str, str]
"""``(ts UTC epoch ms, kind, text, ">"-joined category path or "")``, as in
``RegenerationRequest.recent``."""

MAX_INDEX = 20
INDEX_TOKENS: tuple[str, ...] = tuple(f"<{i}>" for i in range(1, MAX_INDEX + 1))
TIME_TOKENS: tuple[str, ...] = (
    "<Today>",
    "<1_day_ago>",
    *(f"<{d}_days_ago>" for d in range(2, 7)),
    "<1_week_ago>",
    "<2_weeks_ago>",
    "<1_month_ago>",
    "<older>",
)
KIND_TOKENS: tuple[str, ...] = ("<search>", "<click>", "<hint_click>")
MAX_HISTORY_QUERIES = 10
"""History queries a prompt shows (``Searched:``): as many as a list holds."""
COPY_TOKENS: tuple[str, ...] = tuple(f"<h{i}>" for i in range(1, MAX_HISTORY_QUERIES + 1))
"""``<h3>`` opens the prompt's third history query; in the output, alone on its line, it is a
copy of that query (a pointer: the model can repeat a query whatever its words, including
words its vocabulary lacks). :func:`generators.output.parse_queries` expands it."""
COPY_TOKEN = re.compile(r"<h(\d{1,2})>")
"""A copy token; group 1 is its number (``shown_history`` and the output parser read it)."""
SPECIAL_TOKENS: tuple[str, ...] = INDEX_TOKENS + TIME_TOKENS + KIND_TOKENS + COPY_TOKENS
TOKEN_WORDS: dict[str, str] = {
    **{tok: str(i) for i, tok in enumerate(INDEX_TOKENS, start=1)},
    **{tok: tok[1:-1].replace("_", " ").lower() for tok in TIME_TOKENS},
    **{tok: tok[1:-1].replace("_", " ") for tok in KIND_TOKENS},
    **{tok: f"searched {i}" for i, tok in enumerate(COPY_TOKENS, start=1)},
}
"""Each special token's plain words: its new embedding starts as their sub-words' mean."""

DAY_MS = 86_400_000
MAX_PROFILE_FEATURES = 8
_KIND_INDEX = {"search": 0, "click": 1, "hint_click": 2}

_ANGLE_AND_SEPARATORS = re.compile(r"[<>{}|]")
_WHITESPACE = re.compile(r"\s+")
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")  # terminal colours: "\x1b[31m"


class PromptError(AigqError, ValueError):
    """A prompt cannot be built from these arguments (unknown behaviour kind, bad limits)."""


def time_bucket(ts_ms: int, now_ms: int) -> str:
    """The :data:`TIME_TOKENS` entry for a behaviour at ``ts_ms`` seen at ``now_ms``.

    Days are whole days elapsed (floor); a behaviour in the future (clock skew) is ``<Today>``.
    """
    days = (now_ms - ts_ms) // DAY_MS
    if days <= 0:
        return "<Today>"
    if days < 7:
        return TIME_TOKENS[days]
    if days < 14:
        return "<1_week_ago>"
    if days < 30:
        return "<2_weeks_ago>"
    if days < 60:
        return "<1_month_ago>"
    return "<older>"


def clean_text(text: str, max_chars: int = 64) -> str:
    """User text made safe for a prompt: one line, no special-token or separator characters.

    NFKC-normalises (so a full-width less-than sign, U+FF1C, cannot smuggle a ``<``), removes
    terminal escape sequences (``\\x1b[31m``) and every Unicode control, format or unassigned
    character (category ``C*``: ``\\n``, ``\\x00``, bidi overrides; whitespace becomes a space),
    turns ``<``, ``>``, ``{``, ``}`` and ``|`` into spaces, collapses whitespace, strips edge
    spaces, and cuts to ``max_chars`` characters, at a word boundary when one lies in the
    second half.
    Letters of every script stay.
    """
    if max_chars < 1:
        raise PromptError(f"max_chars must be >= 1, got {max_chars}")
    text = _ANSI_ESCAPE.sub("", unicodedata.normalize("NFKC", text))
    text = "".join(" " if ch.isspace() else ch for ch in text if ch.isspace() or _printable(ch))
    text = _ANGLE_AND_SEPARATORS.sub(" ", text)
    text = _WHITESPACE.sub(" ", text).strip()
    if len(text) <= max_chars:
        return text
    head = text[:max_chars]
    cut = head.rfind(" ")
    if text[max_chars] != " " and cut >= max_chars // 2:
        head = head[:cut]
    return head.rstrip(" ;")


def _printable(ch: str) -> bool:
    return not unicodedata.category(ch).startswith("C")


_WORDS = re.compile(r"\w+")


def _clean_category(path: str) -> str:
    parts = (clean_text(part) for part in path.split(">"))
    return ">".join(part for part in parts if part)


def profile_interests(profile: Sequence[tuple[str, float]]) -> list[str]:
    """The profile's strongest features (at most 8) as clean words or ``>``-joined categories.

    ``t:<word>`` features are terms, ``c:<path>`` categories; a feature without a known prefix
    counts as a term. Features that clean to nothing and repeats are skipped.
    """
    out: list[str] = []
    for feature, _weight in sorted(profile, key=lambda fw: -fw[1]):
        if feature.startswith("c:"):
            text = _clean_category(feature[2:])
        else:
            text = clean_text(feature[2:] if feature.startswith("t:") else feature)
        if text and text not in out:
            out.append(text)
            if len(out) == MAX_PROFILE_FEATURES:
                break
    return out


def _rows(
    recent: Sequence[Behaviour],
    now_ms: int,
    item_text: ItemText | None,
    max_behaviours: int,
    as_they_came: bool = False,
) -> list[tuple[int, str, int, str]]:
    """``(index, time token, kind index, clean text)``, newest first. ``as_they_came``: clicked
    items keep their own text (up to 120 characters) instead of the item-to-text surrogate."""
    if not 1 <= max_behaviours <= MAX_INDEX:
        raise PromptError(f"max_behaviours must be in 1..{MAX_INDEX}, got {max_behaviours}")
    surrogate: ItemText = item_text if item_text is not None else SurrogateItemText()
    chars = _VERBOSE_TEXT_CHARS if as_they_came else 64
    rows = []
    newest_first = list(reversed(recent))[:max_behaviours]
    for index, (ts, kind, text, category) in enumerate(newest_first, start=1):
        if kind not in _KIND_INDEX:
            raise PromptError(f"unknown behaviour kind {kind!r}, expected one of {_KIND_INDEX}")
        raw = surrogate(text, category) if kind == "click" and not as_they_came else text
        rows.append((index, time_bucket(ts, now_ms), _KIND_INDEX[kind], clean_text(raw, chars)))
    return rows


_VERBOSE_TEXT_CHARS = 120  # what the session keeps of a behaviour's text


def _check_k(k: int) -> None:
    if k < 1:
        raise PromptError(f"k must be >= 1, got {k}")


def compressed_prompt(
    profile: Sequence[tuple[str, float]],
    recent: Sequence[Behaviour],
    now_ms: int,
    k: int = 10,
    item_text: ItemText | None = None,
    max_behaviours: int = 20,
    history: Sequence[str] = (),
) -> str:
    """The model's input: ``Recommend {k} queries. Interests: ... Behaviors:
    {<1><Today><click> text<2><1_day_ago><search> text} Searched: {top query\nnext} Output:``.

    ``recent`` is oldest first (as a :class:`~aigq.events.RegenerationRequest` carries it); the
    newest behaviour gets ``<1>`` and only the newest ``max_behaviours`` are kept. Clicks are
    rendered through ``item_text`` (default :class:`~generators.items.SurrogateItemText`).

    Pruned beyond the paper's example shape, because every token here is paid on each request:
    the instruction is three words (fine-tuning teaches the task); rows need no separator,
    since each starts with its index token, which user text can never produce; the braces stay
    as the sequence's end, which user text can never produce either (``clean_text`` strips
    them), so a query such as ``"x Output: y"`` cannot end it early; and the profile lists only
    interests the sequence does not already say, and is left out when there are none.

    ``history`` is the user's most searched queries, strongest first (the paper's "User
    Profile"; :func:`cache.history.top_queries` of the worker's fold): the first
    :data:`MAX_HISTORY_QUERIES` that clean to something, each after its :data:`COPY_TOKENS`
    token (``{<h1>google<h2>yahoo mail}``), so the model can copy the ones the user keeps coming
    back to by writing that token (whatever their words) and spend the rest of the list on new
    ones. It goes last, next to ``Output:``, so a prompt cut from the left for length loses old
    behaviours first; :func:`shown_history` reads it back.
    """
    _check_k(k)
    rows = _rows(recent, now_ms, item_text, max_behaviours)
    said = {word for row in rows for word in _WORDS.findall(row[3].lower())}
    novel = [i for i in profile_interests(profile) if not _interest_words(i) <= said]
    interests = f"Interests: {', '.join(novel)}. " if novel else ""
    sequence = "".join(
        f"{INDEX_TOKENS[i - 1]}{time}{KIND_TOKENS[kind]} {text}".rstrip()
        for i, time, kind, text in rows
    )
    past = "".join(f"{COPY_TOKENS[i]}{q}" for i, q in enumerate(history_queries(history)))
    searched = f" Searched: {{{past}}}" if past else ""
    return f"Recommend {k} queries. {interests}Behaviors: {{{sequence}}}{searched} Output:"


_SHOWN = re.compile(rf" Searched: \{{((?:{COPY_TOKEN.pattern}[^<>{{}}]*)+)\}} Output:$")


def shown_history(prompt: str) -> list[str]:
    """The history queries a compressed prompt shows, in :data:`COPY_TOKENS` order (``[]``
    when it shows none): what the output's copy tokens stand for. Unambiguous, as user text
    can hold neither angle brackets nor braces (:func:`clean_text`)."""
    found = _SHOWN.search(prompt)
    if found is None:
        return []
    return COPY_TOKEN.split(found.group(1))[2::2]  # "", "1", "google", "2", "yahoo mail"


def history_queries(history: Sequence[str]) -> list[str]:
    """The history queries a prompt shows: cleaned, lowercase, each once, at most
    :data:`MAX_HISTORY_QUERIES`, in the given order (strongest first)."""
    out: list[str] = []
    for query in history:
        text = clean_text(query).lower()
        if text and text not in out:
            out.append(text)
            if len(out) == MAX_HISTORY_QUERIES:
                break
    return out


def _interest_words(interest: str) -> set[str]:
    """The words an interest says, as the sequence would say them: a host (a web log's
    category, ``weather.com``) by its meaningful words (``weather``), like a clicked item."""
    leaf = interest.rsplit(">", 1)[-1]
    if looks_like_url(leaf):
        return set(url_words(leaf)) or {leaf.lower()}
    return set(_WORDS.findall(interest.lower()))


def verbose_prompt(
    profile: Sequence[tuple[str, float]],
    recent: Sequence[Behaviour],
    now_ms: int,
    k: int = 10,
    item_text: ItemText | None = None,
    max_behaviours: int = 20,
    history: Sequence[str] = (),
) -> str:
    """The prompt before context engineering, to measure what it saves: a full instruction,
    one behaviour per line as ``index | time | kind | text`` in plain words, and each clicked
    item as it arrived (its whole text, up to 120 characters: a title or a URL) instead
    of the item-to-text surrogate. ``item_text`` is accepted for symmetry and not used."""
    _check_k(k)
    rows = _rows(recent, now_ms, None, max_behaviours, as_they_came=True)
    interests = ", ".join(profile_interests(profile)) or "none"
    past = "; ".join(history_queries(history))
    searched = f"; most searched: {past}" if past else ""
    sequence = "\n".join(
        f"{i} | {TOKEN_WORDS[time]} | {TOKEN_WORDS[KIND_TOKENS[kind]]} | {text}".rstrip()
        for i, time, kind, text in rows
    )
    return (
        f"You are a search assistant. Please recommend the next {k} search queries that this "
        f"user is most likely to search for, most likely first, one query per line, with no "
        f"numbering and no explanation. User Profile: interests: {interests}{searched}. "
        f"User Behavior Sequence (index, time, type, content):\n{sequence}\nOutput:"
    )


def format_target(queries: Sequence[str], shown: Sequence[str] = ()) -> str:
    """The model's output (the trainer's labels): clean queries, one per line, nothing else; a
    query that is one of ``shown`` (the prompt's history queries, :func:`history_queries`) is
    written as its copy token (``<h2>``).

    Queries that clean to nothing are left out, so the target never holds a blank line.
    """
    copies = {query: COPY_TOKENS[i] for i, query in enumerate(shown[:MAX_HISTORY_QUERIES])}
    lines = (clean_text(q) for q in queries)
    return "\n".join(copies.get(q.lower(), q) for q in lines if q)
