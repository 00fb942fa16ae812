"""AIGQ-Think's training targets: a teacher's rationale, then the labels grouped by trigger set.

A Think sample (:func:`training.samples.think_samples`: a user-day's context and its ranked
labels) becomes ``(prompt, target)``:

- the prompt is :func:`generators.think.think_prompt` of the context (the Direct prompt with
  ``Think, then recommend`` as its instruction);
- the labels are cut to the ``k`` the u2q parser would keep, and each gets a **trigger set**
  (:func:`align`): the behaviours of the prompt that share a content word with it;
- a teacher LLM (:class:`training.teacher.Teacher`, any OpenAI-compatible endpoint) writes one
  sentence on why these searches follow from those behaviours (:func:`teacher_prompt`);
  :func:`check_rationale` keeps it only when it is one plain line of 4..40 words, not a
  refusal nor an echo of the question, and **aligned**: it names at least one content word of
  the behaviours or the labels;
- the target is :func:`generators.think.render_think` of the rationale and the pairs.

Every sample taken is counted exactly once (:class:`ThinkCounts`); none is dropped silently.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from generators.items import looks_like_url, url_words
from generators.output import parse_queries
from generators.prompt import (
    KIND_TOKENS,
    MAX_INDEX,
    TOKEN_WORDS,
    Behaviour,
    _rows,  # the prompt's own numbering of the behaviours it shows
    clean_text,
    history_queries,
)
from generators.think import (
    MAX_RATIONALE_CHARS,
    ThinkPair,
    render_think,
    think_prompt,
    think_prompt_for,
)
from training import TrainingError
from training.samples import Context, Sample
from training.teacher import Teacher, TeacherError

MIN_RATIONALE_WORDS = 4
MAX_RATIONALE_WORDS = 40
MAX_TRIGGERS = 4
"""Behaviours one trigger set names at most (the newest that share a word): a word shared by
half the sequence says little about any one of them, and a short trigger line is cheap."""
UNALIGNED_TRIGGERS = 2
"""A label that shares no content word with any behaviour goes with the newest this many."""

_STOPWORDS = (
    "the and for with from that this what when where which who how why are was were has have "
    "had not but you your our their they them his her its can could would should will all any "
    "some more most other into onto out off over under about after before than then there "
    "here also just only very too get got does did doing done near free online best new www "
    "com http https html"
)
STOPWORDS = frozenset(_STOPWORDS.split())
"""Words that say nothing about an interest (English function words and URL noise)."""
T = TypeVar("T")
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_VERBS = {"<search>": "searched", "<click>": "clicked", "<hint_click>": "clicked the suggestion"}


def content_words(text: str) -> set[str]:
    """``text``'s words that can carry an interest: lowercase, 3+ characters, not all digits,
    not a :data:`STOPWORDS` entry."""
    words = _WORD.findall(text.lower())
    return {w for w in words if len(w) >= 3 and not w.isdigit() and w not in STOPWORDS}


@dataclass(frozen=True, slots=True)
class Shown:
    """One behaviour as the prompt shows it: its index (newest = 1), plain words, content."""

    index: int
    line: str
    words: frozenset[str]
    behaviour: Behaviour = (0, "search", "", "")
    """the behaviour itself, as the session holds it (what a one-behaviour prompt shows)"""


def shown_behaviours(context: Context, max_behaviours: int = MAX_INDEX) -> list[Shown]:
    """The behaviours the context's prompt shows, newest first, numbered as it numbers them
    (:func:`generators.prompt.compressed_prompt`'s rows, so ``index`` is the prompt's
    ``<index>``). A click's words are its surrogate's plus, for a URL, the URL's words."""
    rows = _rows(context.recent, context.now_ms, None, max_behaviours)
    raw = list(reversed(context.recent))
    out = []
    for (index, time, kind, text), behaviour in zip(rows, raw, strict=False):
        _, kind_name, raw_text, _ = behaviour
        words = content_words(text)
        if kind_name == "click" and looks_like_url(raw_text):
            words |= content_words(" ".join(url_words(raw_text)))
        verb = _VERBS[KIND_TOKENS[kind]]
        line = f"{index}. {TOKEN_WORDS[time]}, {verb} {text}"
        out.append(Shown(index, line, frozenset(words), behaviour))
    return out


def align(
    context: Context,
    labels: Sequence[str],
    max_behaviours: int = MAX_INDEX,
    max_triggers: int = MAX_TRIGGERS,
) -> list[ThinkPair]:
    """The labels grouped by trigger set, pairs in the order of their first label (so the
    interest order is kept as far as grouping allows), labels in their order within a pair.

    A label's trigger set is the indices (newest = 1, only the behaviours the prompt shows) of
    the behaviours sharing a :func:`content_words` word with it, the newest ``max_triggers``
    of them, ascending. A label that shares no word with any behaviour (a new interest, or
    words the sequence spells otherwise) gets the **newest two behaviours** (``<1><2>``, or
    ``<1>`` when only one is shown): they are what the session fired on, the likeliest context
    of a search the words cannot explain, and x2q then serves it from the user's latest
    triggers, where the paper looks first. No behaviour shown: no pair at all (``[]``).
    """
    shown = shown_behaviours(context, max_behaviours)
    if not shown:
        return []
    fallback = tuple(b.index for b in shown[:UNALIGNED_TRIGGERS])
    groups: dict[tuple[int, ...], list[str]] = {}
    for label in labels:
        words = content_words(label)
        sharing = tuple(b.index for b in shown if b.words & words)[:max_triggers]
        groups.setdefault(sharing or fallback, []).append(label)
    return [ThinkPair(triggers, tuple(queries)) for triggers, queries in groups.items()]


def teacher_prompt(
    shown: Sequence[Shown], labels: Sequence[str], api: Literal["chat", "completions"] = "chat"
) -> str:
    """What the teacher is asked for one sample: the behaviours in plain words, numbered as the
    prompt numbers them (newest first), the searches that followed, and the question. A
    completions-style model (no chat template) gets an ``Answer:`` cue to continue from."""
    lines = "\n".join(b.line for b in shown)
    searches = "; ".join(clean_text(label) for label in labels)
    text = (
        f"A user's recent behaviours, newest first:\n{lines}\n"
        f"Afterwards the user searched: {searches}.\n"
        "In one sentence of plain words, say what the user is looking for and why these "
        "searches follow from the behaviours."
    )
    return f"{text}\nAnswer:" if api == "completions" else text


RationaleVerdict = Literal["kept", "empty", "markup", "length", "refusal", "echo", "unaligned"]

_PREFIX = re.compile(
    r"^(?:rationale|reason(?:ing)?|answer|explanation|because|sure|okay|ok|certainly)"
    r"\s*[:,!.\-]+\s*",
    re.IGNORECASE,
)
_PLAIN_WORD = re.compile(r"[^\W_]+")
_QUOTES = "\"'`* \u201c\u201d\u2018\u2019\u00ab\u00bb"  # straight, curly and angle quotes
_REFUSAL = re.compile(
    r"\b(?:i'?m sorry|i am sorry|i can'?t|i cannot|i can not|as an ai|i'?m unable|i am unable|"
    r"i won'?t|unable to (?:help|answer|determine)|not enough information)\b",
    re.IGNORECASE,
)
_ECHO = re.compile(
    r"newest first|one sentence|plain words|recent behaviours|afterwards the user searched"
    r"|^\d+\.\s",
    re.IGNORECASE,
)


def check_rationale(
    answer: str, content: set[str] | frozenset[str]
) -> tuple[str, RationaleVerdict]:
    """The rationale of a teacher's answer and whether it is kept: its first non-empty line,
    quotes and a ``Rationale:``/``Answer:``-style prefix stripped, cleaned
    (:func:`~generators.prompt.clean_text`), and a kept one as :func:`plain_words`. Refused
    as ``markup`` when the line holds angle
    brackets or braces (a chat marker, a template: not plain words), ``length`` outside
    4..40 words, ``refusal``, ``echo`` (the question or its behaviour list said back),
    ``unaligned`` when it names none of ``content`` (the behaviours' and labels' content
    words), ``empty`` when there is no line at all."""
    line = next((ln.strip() for ln in answer.splitlines() if ln.strip()), "")
    for _ in range(3):  # '"Answer: Sure, ..."'
        stripped = _PREFIX.sub("", line.strip(_QUOTES)).strip()
        if stripped == line:
            break
        line = stripped
    if not line:
        return "", "empty"
    if re.search(r"[<>{}]", line):
        return line, "markup"
    words = line.split()
    if not MIN_RATIONALE_WORDS <= len(words) <= MAX_RATIONALE_WORDS:
        return line, "length"
    line = clean_text(line, MAX_RATIONALE_CHARS)
    if _REFUSAL.search(line):
        return line, "refusal"
    if _ECHO.search(line):
        return line, "echo"
    if not content_words(line) & content:
        return line, "unaligned"
    return plain_words(line), "kept"


def plain_words(line: str) -> str:
    """A kept rationale as the model will write it: lowercase words, single spaces, no
    punctuation. Queries are written that way, so a word-level model's vocabulary (lowercase
    query words) holds these words, where ``The`` or ``shoes.`` would be unknown and IL-SFT
    would leave the whole line out of the target (:func:`training.sft.encode`)."""
    return " ".join(_PLAIN_WORD.findall(line.lower().replace("'", "").replace("\u2019", "")))


@dataclass(slots=True)
class ThinkCounts:
    """What became of the samples taken for the teacher; each is counted once:
    ``asked == kept + unparsed + unaligned + no_pairs + errors``.

    ``asked``: samples taken; ``no_pairs``: none of their labels makes a pair (no valid label,
    or no behaviour shown), so the teacher is not asked; ``errors``: the teacher gave no
    answer; ``answered``: it did (``kept + unparsed + unaligned``); ``unparsed``: the answer
    holds no usable rationale (``unparsed_reasons`` says why: :data:`RationaleVerdict`);
    ``unaligned``: its rationale names no word of the behaviours or labels.
    """

    asked: int = 0
    answered: int = 0
    unparsed: int = 0
    unaligned: int = 0
    no_pairs: int = 0
    kept: int = 0
    errors: int = 0
    unparsed_reasons: dict[str, int] = field(default_factory=dict)
    first_error: str = ""

    def add(self, verdict: RationaleVerdict) -> None:
        """Count one answer's verdict."""
        self.answered += 1
        if verdict == "kept":
            self.kept += 1
        elif verdict == "unaligned":
            self.unaligned += 1
        else:
            self.unparsed += 1
            self.unparsed_reasons[verdict] = self.unparsed_reasons.get(verdict, 0) + 1


@dataclass(frozen=True, slots=True)
class Question:
    """One sample made ready for the teacher: its Think prompt, its pairs, the prompt's
    history queries (for copy tokens), the content words a rationale must name one of, and
    the text the teacher is asked."""

    prompt: str
    pairs: list[ThinkPair]
    shown: list[str]
    content: frozenset[str]
    text: str
    behaviours: tuple[Behaviour, ...] = ()
    """the shown behaviours, ``behaviours[i - 1]`` being the prompt's ``<i>``"""


def question(
    sample: Sample, k: int, api: Literal["chat", "completions"] = "chat"
) -> Question | None:
    """A sample's :class:`Question`; None when it makes no pair (no valid label, or no
    behaviour shown), so the teacher is never asked about it."""
    context = sample.context
    # the labels as the u2q parser keeps them (valid, distinct, at most k): a pair can then
    # never lose a query in rendering, and the k slots go to the strongest interests
    labels = parse_queries("\n".join(clean_text(q) for q in sample.labels if ";;" not in q), k=k)
    pairs = align(context, labels)
    if not pairs:
        return None
    shown = shown_behaviours(context)
    content = frozenset().union(*(b.words for b in shown), *(content_words(q) for q in labels))
    return Question(
        think_prompt_for(context.request(), k),
        pairs,
        history_queries(context.history),
        content,
        teacher_prompt(shown, labels, api),
        tuple(b.behaviour for b in shown),
    )


def targets_from_answers(
    questions: Sequence[Question | None], answers: Sequence[str | TeacherError], k: int = 10
) -> tuple[list[tuple[str, str]], ThinkCounts]:
    """``(prompt, target)`` of each question whose answer's rationale is kept, in order, and
    the counts of all (``answers``: one per question that is not None, in order)."""
    asked = [q for q in questions if q is not None]
    if len(answers) != len(asked):
        raise TrainingError(f"{len(asked)} questions but {len(answers)} answers")
    counts = ThinkCounts(asked=len(questions), no_pairs=len(questions) - len(asked))
    out: list[tuple[str, str]] = []
    for item, answer in zip(asked, answers, strict=True):
        if isinstance(answer, TeacherError):
            counts.errors += 1
            counts.first_error = counts.first_error or str(answer)
            continue
        rationale, verdict = check_rationale(answer, item.content)
        counts.add(verdict)
        if verdict == "kept":
            out.append((item.prompt, render_think(rationale, item.pairs, item.shown, k)))
    return out, counts


def singles(item: Question, k: int = 10) -> list[tuple[str, str]]:
    """One-behaviour Think pairs of a sample: for each of its pairs, the prompt that shows
    only the pair's newest behaviour (as ``<1>``, today) and the target ``<1>`` then the pair's
    queries, with no rationale line.

    The x2q builder asks the model exactly that (:func:`generators.x2q_build.trigger_prompt`:
    one trigger's behaviour, alone), a prompt no whole-session sample looks like, and reads
    only the pairs of the answer. The labels are the day's searches that share a word with that
    behaviour (:func:`align`): what the trigger led to. No teacher is asked (its rationales
    are about whole sessions), so every Think sample gives them, not only the ones the
    teacher's budget reaches. The queries are written out (the prompt shows no history, so no
    copy token)."""
    out = []
    for pair in item.pairs:
        index = min(pair.triggers)
        if not 1 <= index <= len(item.behaviours):
            continue
        behaviour = item.behaviours[index - 1]
        prompt = think_prompt((), (behaviour,), behaviour[0], k)
        rendered = render_think("-", [ThinkPair((1,), pair.queries)], (), k)
        target = rendered.split("\n", 1)[1] if "\n" in rendered else ""
        if target:  # at least one query survived rendering
            out.append((prompt, target))
    return out


def single_pairs(samples: Sequence[Sample], k: int = 10) -> list[tuple[str, str]]:
    """:func:`singles` of every sample (no teacher involved)."""
    out: list[tuple[str, str]] = []
    for sample in samples:
        item = question(sample, k)
        if item is not None:
            out.extend(singles(item, k))
    return out


async def think_targets_async(
    samples: Sequence[Sample],
    teacher: Teacher,
    k: int = 10,
    cache: dict[str, str] | None = None,
) -> tuple[list[tuple[str, str]], ThinkCounts]:
    """``(prompt, target)`` of each sample whose rationale is kept, in sample order, and the
    counts of what became of every sample (module doc). Raises :class:`TeacherError` when the
    teacher answered none of the questions it was asked (it is not there).

    ``cache`` (question text -> answer) holds answers already given: those questions are not
    asked again, and every new answer is added to it (a teacher's answers cost about a second
    each on a CPU: a second run with other training settings should not pay them again)."""
    if k < 1:
        raise TrainingError(f"k must be >= 1, got {k}")
    cache = {} if cache is None else cache
    questions = [question(sample, k, teacher.config.api) for sample in samples]
    texts = [q.text for q in questions if q is not None]
    missing = list(dict.fromkeys(t for t in texts if t not in cache))
    fresh = await teacher.ask_all(missing)
    for text, answer in zip(missing, fresh, strict=True):
        if isinstance(answer, str):
            cache[text] = answer
    given = dict(zip(missing, fresh, strict=True))
    answers = [cache[t] if t in cache else given[t] for t in texts]
    out, counts = targets_from_answers(questions, answers, k)
    if fresh and sum(isinstance(a, TeacherError) for a in fresh) == len(fresh):
        raise TeacherError(f"the teacher answered none of {len(fresh)}: {counts.first_error}")
    return out, counts


def think_targets(
    samples: Sequence[Sample],
    teacher: Teacher,
    k: int = 10,
    cache: dict[str, str] | None = None,
) -> tuple[list[tuple[str, str]], ThinkCounts]:
    """:func:`think_targets_async` from synchronous code (the CLI)."""
    return asyncio.run(think_targets_async(samples, teacher, k, cache))


def spread(samples: Sequence[T], limit: int) -> list[T]:
    """At most ``limit`` samples (0: all), evenly spaced over the list, so a small teacher
    budget still reaches users from the whole log (samples are grouped by user)."""
    if limit < 0:
        raise TrainingError(f"limit must be >= 0, got {limit}")
    if limit == 0 or limit >= len(samples):
        return list(samples)
    return [samples[i * len(samples) // limit] for i in range(limit)]
