"""Queries that are never shown as hints, whoever searched them.

Hints are suggestions shown before anyone types, so they follow the rule public query
suggestion follows: no sexually explicit queries, and nothing sexual about children. The AOL log
holds both (among them sexual queries about minors, which the copy-token default served back
verbatim from a user's own history). A query is **blocked** when one of its words is in
:data:`BLOCKED_WORDS`, or its text contains one of :data:`BLOCKED_STEMS` (written together:
"freeporn", "teenxxx"). Blocking is by words, not meaning, so it over-blocks ("sex offender
registry"): a hint is a suggestion, and the user can still search for anything.

Where it applies: the user's history leaves the session without blocked queries
(:func:`cache.history.top_queries`: not in the prompt, not in Redis, not in the served list),
the generator's output validation drops them (counted, ``dropped_unsafe``), and the popular
queries skip them (:func:`training.served.popular_queries`, :class:`cache.popular.PopularQueries`).
"""

from __future__ import annotations

import re
from functools import lru_cache

BLOCKED_WORDS = frozenset(
    [
        "anal",
        "bdsm",
        "bestiality",
        "blowjob",
        "blowjobs",
        "boobs",
        "bukkake",
        "cock",
        "cocks",
        "cum",
        "cumshot",
        "cunt",
        "dildo",
        "erotic",
        "erotica",
        "fetish",
        "fuck",
        "fucked",
        "fucking",
        "gangbang",
        "handjob",
        "hentai",
        "horny",
        "incest",
        "jailbait",
        "lolita",
        "lolitas",
        "masturbate",
        "masturbation",
        "milf",
        "molest",
        "molested",
        "molesting",
        "naked",
        "nude",
        "nudes",
        "nudist",
        "nudists",
        "nudity",
        "orgasm",
        "orgy",
        "pedo",
        "pedophile",
        "pedophilia",
        "penis",
        "porn",
        "porno",
        "pornographic",
        "pornography",
        "preteen",
        "preteens",
        "pussy",
        "rape",
        "raped",
        "rapes",
        "raping",
        "sex",
        "sexy",
        "shemale",
        "slut",
        "sluts",
        "tits",
        "titties",
        "topless",
        "upskirt",
        "vagina",
        "whore",
        "whores",
        "xxx",
    ]
)
"""Words that block a query (lower case, whole words)."""

BLOCKED_STEMS = ("porn", "xxx", "hentai", "incest", "preteen", "lolita", "jailbait", "pedophil")
"""Substrings that block a query wherever they are (none is a part of an ordinary word)."""

_WORD = re.compile(r"[a-z0-9]+")


@lru_cache(maxsize=65_536)
def is_blocked(query: str) -> bool:
    """Whether ``query`` may never be shown as a hint (see the module doc)."""
    text = query.lower()
    if any(stem in text for stem in BLOCKED_STEMS):
        return True
    return any(word in BLOCKED_WORDS for word in _WORD.findall(text))
