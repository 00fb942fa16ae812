"""The one async interface every generation backend has: ``generate(prompts) -> query lists``.

A backend only has to say how to *complete* a batch of prompts (``n`` raw samples each);
this base turns those samples into validated lists the same way for all of them: copy tokens
(``<h2>``) become the prompt's history queries they point at, the ``n`` samples of a prompt
are merged in rank order (first queries of every sample, then the
second ones, ...), then parsed, cleaned, de-duplicated and cut to ``k`` by
:func:`generators.output.validate`. A list with no valid query comes back empty and counted
as malformed: it is never written as garbage.

Errors: :class:`BackendUnavailable` (down, timed out, 5xx: worth retrying, and the worker
waits for the backend to come back) and :class:`BackendRejected` (the backend refused this
input, e.g. a prompt too long: retrying the same batch cannot help).

**Hot reload.** ``model_version`` names the model being served; :meth:`Backend.swap` replaces
it while generation goes on (:mod:`generators.reload` calls it when a version is announced).
A backend that cannot swap raises :class:`ReloadUnsupported`, one whose new model fails to load
raises :class:`ReloadFailed` and keeps the current one. Each batch's lists come back with the
version that generated them (:meth:`Backend.generate_versioned`), taken together with the model,
so a list is never labelled with a version swapped in while it was being generated.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import NamedTuple, Self

from aigq.errors import AigqError, ServiceError
from generators.output import OutputStats, parse_queries, validate
from generators.prompt import COPY_TOKENS, shown_history
from generators.settings import GeneratorSettings


class BackendUnavailable(ServiceError):
    """The backend did not answer, timed out or failed on its side; retry later."""


class BackendRejected(AigqError):
    """The backend refused the input; the same input will be refused again."""


class ReloadUnsupported(AigqError):
    """This backend cannot swap its model while it runs (the message says what to do)."""


class ReloadFailed(AigqError):
    """The new model could not be loaded; the backend goes on serving the current one."""


class Generated(NamedTuple):
    """A batch's validated lists and the model version that generated every one of them."""

    lists: list[list[str]]
    version: str


def output_regex(k: int, max_chars: int) -> str:
    """The list format as a regular expression, for structured (constrained) decoding:
    1..k lines, each a copy token (``<h2>``) or 2..max_chars characters of which none opens or
    closes a tag."""
    copy = "|".join(tok[1:-1] for tok in COPY_TOKENS)
    return rf"((<({copy})>|[^\n<>]{{2,{max_chars}}})\n){{1,{k}}}"


def interleave(samples: Sequence[Sequence[str]]) -> list[str]:
    """Rank-ordered merge of several lists: every list's first, then every list's second..."""
    merged: list[str] = []
    for rank in range(max((len(s) for s in samples), default=0)):
        merged.extend(s[rank] for s in samples if rank < len(s))
    return merged


class Backend(abc.ABC):
    """Base of the backends; use as ``async with``. ``stats`` counts what validation did."""

    name: str = "backend"

    def __init__(self, settings: GeneratorSettings) -> None:
        self.settings = settings
        self.stats = OutputStats()
        self.model_seconds = 0.0  # time spent inside complete(), all batches
        self.model_version = settings.version  # what each list is recorded as (hot reload)

    @abc.abstractmethod
    async def complete(self, prompts: Sequence[str]) -> list[list[str]]:
        """``settings.n`` raw completions for each prompt, in prompt order."""

    async def complete_versioned(self, prompts: Sequence[str]) -> tuple[list[list[str]], str]:
        """:meth:`complete` and the version that made it. A backend that swaps models takes
        both at once (under its lock, in one request); one that never swaps needs no more."""
        version = self.model_version
        return await self.complete(prompts), version

    async def swap(self, path: Path, version: str, adapter: bool = False) -> None:
        """Serve the model (or LoRA ``adapter``) at ``path`` as ``version`` from the next batch
        on; a batch in flight finishes on the current one."""
        raise ReloadUnsupported(
            f"the {self.name} backend cannot swap its model while it runs: restart the "
            f"generator on {version}"
        )

    async def healthy(self) -> bool:
        """Whether the backend can take work now (the worker polls this while paused)."""
        return True

    async def generate(self, prompts: Sequence[str]) -> list[list[str]]:
        """One validated, ordered query list per prompt (empty when the output was garbage)."""
        return (await self.generate_versioned(prompts)).lists

    async def generate_versioned(self, prompts: Sequence[str]) -> Generated:
        """:meth:`generate`, with the model version that generated the lists."""
        if not prompts:
            return Generated([], self.model_version)
        started = time.perf_counter()
        samples, version = await self.complete_versioned(prompts)
        self.model_seconds += time.perf_counter() - started
        s = self.settings
        shown = [shown_history(prompt) for prompt in prompts]  # what copy tokens point at
        if s.n == 1:
            texts = [sample[0] if sample else "" for sample in samples]
        else:
            texts = [
                "\n".join(
                    interleave(
                        [parse_queries(t, s.k, s.max_query_chars, shown=history) for t in ts]
                    )
                )
                for ts, history in zip(samples, shown, strict=True)
            ]
        lists, stats = validate(texts, k=s.k, max_chars=s.max_query_chars, shown=shown)
        self.stats.add(stats)
        return Generated(lists, version)

    async def aclose(self) -> None:  # noqa: B027 (most backends hold nothing to release)
        """Release what the backend holds (connections, an engine)."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
