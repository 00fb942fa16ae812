"""AIGQ-Think's output format: a rationale, then (trigger set -> query list) pairs. Pure.

The paper's Think target is a reasoning trace followed by structured pairs whose triggers are
indices into the prompt's behaviour sequence (``<1>`` is the newest behaviour, as
:func:`generators.prompt.compressed_prompt` numbers them). The format is chosen so that a small
word-level model writes it with tokens it already has (the index tokens are special tokens of
the prompt; a newline is a token)::

    the user compares running shoes after clicking two pairs
    <2><5>
    first query for behaviours 2 and 5
    <h3>
    <1>
    a query for behaviour 1

Line 1 is the rationale (one line of plain words). A line made only of index tokens opens a
pair; the query lines after it are that pair's, judged with the u2q parser's own line rules
(:func:`generators.output.line_verdicts`: cleaned, lowercase, bounded, safe, not a
near-duplicate of an earlier line of the same pair; a copy token ``<hN>`` alone on its line
is that history query of the prompt). :func:`parse_think` returns what survives and names
every drop in ``problems``; :func:`render_think` writes a target that parses back unchanged.

Here in ``generators/`` (not ``training/``) because the x2q builder serves what this parser
reads, and the generator layer must not import training.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from aigq.events import RegenerationRequest
from generators.items import ItemText
from generators.output import line_verdicts
from generators.prompt import (
    INDEX_TOKENS,
    Behaviour,
    PromptError,
    clean_text,
    compressed_prompt,
    format_target,
)

MAX_RATIONALE_CHARS = 400
"""A rationale longer than this is cut (at a word boundary): one line, never an essay."""
DIRECT_INSTRUCTION = "Recommend {k} queries."
THINK_INSTRUCTION = "Think, then recommend {k} queries."
"""The instruction of a Think prompt: everything after it is the Direct prompt's, so one model
serves both tasks and tells them apart by the first words."""

TRIGGER_LINE = re.compile(r"^\s*(?:<\d{1,3}>\s*)+$")
"""A line made only of index tokens (``<2><5>``, spaces allowed between them: a decoder may
put them there). ``<h2>`` is a copy token, not an index: it is a query line."""
_INDEX = re.compile(r"<(\d{1,3})>")

PROBLEMS = (
    "no_rationale",  # line 1 is empty or a trigger line
    "query_outside_pair",  # a non-empty line after the rationale, before any trigger line
    "index_out_of_range",  # a trigger line with an index < 1 or > n: the pair is dropped
    "repeated_index",  # an index twice in one trigger line: kept once
    "empty_pair",  # a trigger line with no query line after it: dropped
    "no_valid_query",  # a pair whose query lines were all dropped: the pair is dropped
    "invalid_query",  # a query line too short, too long, not text, a sampling loop
    "unsafe_query",  # a query line blocked by aigq.safety
    "duplicate_query",  # a near-duplicate of an earlier query of the same pair
    "over_k",  # a query line past the k-th valid query
)
"""Every reason :func:`parse_think` counts, one entry in ``problems`` per occurrence."""


@dataclass(frozen=True, slots=True)
class ThinkPair:
    """One trigger set (behaviour indices as the prompt numbers them, as written) and its
    queries (cleaned, lowercase, in order)."""

    triggers: tuple[int, ...]
    queries: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ThinkOutput:
    """One parsed Think output.

    ``slots[i]`` is the written trigger line (0-based) ``pairs[i]`` came from: IL-GRPO's
    trigger slot, where a dropped pair leaves a gap rather than shifting the pairs after it.
    """

    rationale: str
    pairs: tuple[ThinkPair, ...]
    problems: tuple[str, ...]
    slots: tuple[int, ...] = ()

    @property
    def queries(self) -> tuple[str, ...]:
        """Every pair's queries in order, each once: what the u2q path would serve."""
        return tuple(dict.fromkeys(q for pair in self.pairs for q in pair.queries))

    def for_trigger(self, index: int) -> tuple[str, ...]:
        """The queries of the pairs whose trigger set holds behaviour ``index``, each once:
        what x2q maps that behaviour to."""
        found = (q for pair in self.pairs if index in pair.triggers for q in pair.queries)
        return tuple(dict.fromkeys(found))


def think_prompt(
    profile: Sequence[tuple[str, float]],
    recent: Sequence[Behaviour],
    now_ms: int,
    k: int = 10,
    item_text: ItemText | None = None,
    max_behaviours: int = 20,
    history: Sequence[str] = (),
) -> str:
    """:func:`generators.prompt.compressed_prompt` with its instruction ``Recommend {k}
    queries.`` replaced by ``Think, then recommend {k} queries.`` (same arguments)."""
    prompt = compressed_prompt(profile, recent, now_ms, k, item_text, max_behaviours, history)
    direct = DIRECT_INSTRUCTION.format(k=k)
    if not prompt.startswith(direct):  # compressed_prompt's own format changed
        raise PromptError(f"a compressed prompt no longer starts with {direct!r}")
    return THINK_INSTRUCTION.format(k=k) + prompt[len(direct) :]


def think_prompt_for(request: RegenerationRequest, k: int = 10) -> str:
    """The Think prompt of one request (like :func:`generators.requests.prompt_for`): time
    buckets count back from the request's event time, so the prompt is reproducible."""
    return think_prompt(
        request.profile, request.recent, now_ms=request.event_ts, k=k, history=request.history
    )


def trigger_line(text: str) -> tuple[int, ...] | None:
    """The indices of a trigger line as written (repeats and all), or None for another line."""
    if TRIGGER_LINE.match(text) is None:
        return None
    return tuple(int(i) for i in _INDEX.findall(text))


def _check(n_behaviours: int, k: int) -> None:
    if n_behaviours < 0 or k < 1:
        raise PromptError(f"need n_behaviours >= 0 and k >= 1, got {n_behaviours} and {k}")


class _Parse:
    """One output's parse state: the pair being read, what is kept, what was dropped."""

    def __init__(self, n: int, k: int, rules: tuple[int, int, float], shown: Sequence[str]):
        self.n, self.k, self.rules, self.shown = n, k, rules, shown
        self.pairs: list[ThinkPair] = []
        self.slots: list[int] = []
        self.problems: list[str] = []
        self.kept = 0  # valid queries so far, all pairs

    def pair(self, slot: int, written: tuple[int, ...], lines: list[str]) -> None:
        """Judge one pair: its trigger line's indices and the lines that followed it."""
        triggers = tuple(dict.fromkeys(written))
        self.problems += ["repeated_index"] * (len(written) - len(triggers))
        if any(not 1 <= i <= self.n for i in triggers):
            self.problems.append("index_out_of_range")
            return
        if not any(line.strip() for line in lines):
            self.problems.append("empty_pair")
            return
        max_chars, max_words, near_duplicate = self.rules
        queries: list[str] = []
        verdicts = line_verdicts("\n".join(lines), max_chars, max_words, near_duplicate, self.shown)
        for query, verdict in verdicts:
            if verdict == "empty":
                continue  # a blank line: nothing was written there
            if verdict != "kept":
                self.problems.append(f"{verdict}_query")
            elif self.kept == self.k:
                self.problems.append("over_k")
            else:
                queries.append(query)
                self.kept += 1
        if not queries:
            self.problems.append("no_valid_query")
            return
        self.pairs.append(ThinkPair(triggers, tuple(queries)))
        self.slots.append(slot)


def parse_think(
    text: str,
    n_behaviours: int,
    k: int = 10,
    max_chars: int = 64,
    max_words: int = 10,
    shown: Sequence[str] = (),
    near_duplicate: float = 0.8,
) -> ThinkOutput:
    """The rationale and valid pairs of one Think output (module doc), at most ``k`` queries
    in all; ``n_behaviours`` is how many behaviours the prompt showed (a trigger outside
    ``1..n_behaviours`` drops its pair), ``shown`` its history queries (for copy tokens).

    Each drop is named once in ``problems`` (:data:`PROBLEMS`): a pair dropped for its
    trigger line counts once, not once per query line under it. Query lines are judged pair
    by pair, so one query may serve two trigger sets (x2q maps each trigger to its own list);
    :attr:`ThinkOutput.queries` gives each once.
    """
    _check(n_behaviours, k)
    line_verdicts("", max_chars, max_words, near_duplicate)  # the u2q parser's bounds checks
    lines = text.split("\n")
    state = _Parse(n_behaviours, k, (max_chars, max_words, near_duplicate), shown)
    first = lines[0] if lines else ""
    rationale = ""
    if trigger_line(first) is None:
        rationale = clean_text(first, MAX_RATIONALE_CHARS)
        lines = lines[1:]
    if not rationale:
        state.problems.append("no_rationale")
    written: tuple[int, ...] | None = None
    body: list[str] = []
    slot = -1
    for line in lines:
        indices = trigger_line(line)
        if indices is None:
            if written is None:
                if line.strip():
                    state.problems.append("query_outside_pair")
            else:
                body.append(line)
            continue
        if written is not None:
            state.pair(slot, written, body)
        slot, written, body = slot + 1, indices, []
    if written is not None:
        state.pair(slot, written, body)
    return ThinkOutput(rationale, tuple(state.pairs), tuple(state.problems), tuple(state.slots))


def render_think(
    rationale: str,
    pairs: Sequence[ThinkPair | tuple[Sequence[int], Sequence[str]]],
    shown: Sequence[str] = (),
    k: int = 10,
) -> str:
    """The target text of a rationale and its pairs: what :func:`parse_think` reads back
    unchanged (for ``n_behaviours`` at least the largest trigger and the same ``shown``; a
    query that is one of ``shown`` is written as its copy token).

    Like :func:`training.samples.render_target`, what the parser would drop is left out
    rather than cut: a query it would reject, a pair left without a query, a pair whose
    trigger set is empty or holds an index outside ``1..20``, queries past the ``k``-th; so
    the model never learns a target it would be faulted for. The rationale is
    :func:`~generators.prompt.clean_text` of it (one line).
    """
    _check(0, k)
    line = clean_text(rationale, MAX_RATIONALE_CHARS)
    if not line:
        raise PromptError("a Think target needs a rationale of at least one word")
    given = [p if isinstance(p, ThinkPair) else ThinkPair(tuple(p[0]), tuple(p[1])) for p in pairs]
    given = [
        p for p in given if p.triggers and all(1 <= i <= len(INDEX_TOKENS) for i in p.triggers)
    ]
    # queries as the parser would keep them, each pair on its own (its near-duplicate scope)
    parsed = [
        ThinkPair(p.triggers, tuple(_kept_queries(p.queries, shown))) for p in given
    ]  # fmt: skip
    while True:  # a query such as "1. 2. x" loses one list marker per parse: reach the fixpoint
        text = _render(line, parsed, shown)
        again = parse_think(text, len(INDEX_TOKENS), k, shown=shown).pairs
        if list(again) == parsed:
            return text
        parsed = list(again)


def _kept_queries(queries: Sequence[str], shown: Sequence[str]) -> list[str]:
    pieces = (clean_text(q, max_chars=sys.maxsize) for q in queries)
    text = "\n".join(p for p in pieces if ";;" not in p)  # one query, never two
    return [q for q, verdict in line_verdicts(text, shown=()) if verdict == "kept"]


def _render(rationale: str, pairs: Sequence[ThinkPair], shown: Sequence[str]) -> str:
    lines = [rationale]
    for pair in pairs:
        if pair.queries:
            lines.append("".join(INDEX_TOKENS[i - 1] for i in pair.triggers))
            lines.append(format_target(pair.queries, shown))
    return "\n".join(lines)
