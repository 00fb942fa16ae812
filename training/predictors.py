"""LLM predictors for offline evaluation: many contexts in, one validated query list each.

Every LLM list goes through the generator worker's own backend
(:class:`generators.backends.hf.TransformersBackend`), so it passes exactly the output
validation a served list passes (:func:`generators.output.validate`): what is measured here
is what ``aigq generate`` would write. Greedy decoding (temperature 0, one sample), so a run
is repeatable.

Two kinds:

- a trained model (IL-SFT): the worker's compressed prompt, as it was trained and is served;
- the zero-shot SmolLM2-135M-Instruct baseline (:func:`zero_shot_smollm2`): a chat model that
  was never taught the compressed prompt's special tokens, so it gets the verbose prompt in
  plain words, wrapped in its chat template with an explicit answer-format instruction.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from generators.output import OutputStats
from training import TrainingError
from training.samples import Context

CHAT_INSTRUCTION = "Answer with {k} search queries, one per line, nothing else."


@dataclass(frozen=True)
class PredictorConfig:
    """How an LLM predictor generates."""

    k: int = 10
    """queries asked for (the prompt's number) and kept per list"""
    batch_size: int = 16
    """prompts per generate call (left-padded; sorted by length to pad little)"""
    n: int = 1
    """lists sampled per context and merged by rank (the generator's ``AIGQ_GENERATE_N``)"""
    temperature: float = 0.0
    """0: greedy (then n must be 1); > 0: sampling"""
    max_tokens: int = 160
    """generated tokens per list (the worker's default)"""
    device: str = "cpu"
    timeout_s: float = 3_600.0
    """one batch; CPU generation of a large batch is slow, and a timeout would lose the run"""

    def __post_init__(self) -> None:
        if self.k < 1 or self.batch_size < 1 or self.max_tokens < 8:
            raise TrainingError("need k >= 1, batch_size >= 1 and max_tokens >= 8")
        if self.n < 1 or self.temperature < 0 or (self.n > 1 and self.temperature == 0):
            raise TrainingError("need n >= 1, temperature >= 0, and temperature > 0 for n > 1")


@dataclass
class ModelPredictor:
    """A model folder queried through the worker's transformers backend.

    ``compressed``: the special-token prompt (trained models) or the verbose one; ``chat``:
    wrap the prompt in the tokenizer's chat template with :data:`CHAT_INSTRUCTION` (chat models
    that were not trained on the prompt). After :meth:`predict`, ``stats`` holds the output
    validation's counts and ``model_seconds`` the time spent inside the model (loading it
    included: the backend loads on its first batch).
    """

    name: str
    folder: Path
    compressed: bool = True
    chat: bool = False
    config: PredictorConfig = field(default_factory=PredictorConfig)
    stats: OutputStats = field(default_factory=OutputStats)
    model_seconds: float = 0.0

    def prompts(self, contexts: Sequence[Context]) -> list[str]:
        """The prompt text each context is given (the chat template applied when ``chat``)."""
        k = self.config.k
        raw = [c.prompt(k, compressed=self.compressed) for c in contexts]
        if not self.chat:
            return raw
        tokenizer = self._tokenizer()
        instruction = CHAT_INSTRUCTION.format(k=k)
        out: list[str] = []
        for prompt in raw:
            # the verbose prompt ends with "Output:", a cue for a base model; a chat turn
            # ends with the instruction instead, the last thing a small model reads
            content = f"{prompt.removesuffix('Output:').rstrip()}\n\n{instruction}"
            messages = [{"role": "user", "content": content}]
            text = tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
            out.append(str(text))
        return out

    def predict(self, contexts: Sequence[Context]) -> list[list[str]]:
        """One validated list (at most ``k`` queries, maybe empty) per context, in order."""
        return asyncio.run(self._predict(self.prompts(contexts)))

    def _tokenizer(self) -> Any:
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(str(self.folder))
        except (OSError, ValueError) as exc:
            raise TrainingError(f"{self.name}: cannot load the tokenizer: {exc}") from exc

    async def _predict(self, prompts: Sequence[str]) -> list[list[str]]:
        from generators.backends.base import BackendRejected, BackendUnavailable
        from generators.backends.hf import TransformersBackend
        from generators.settings import GeneratorSettings

        c = self.config
        settings = GeneratorSettings(
            backend="transformers", model=str(self.folder), temperature=c.temperature, n=c.n, k=c.k,
            max_tokens=c.max_tokens, device=c.device, timeout_s=c.timeout_s,
            compressed=self.compressed, model_version=self.name,
        )  # fmt: skip
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        lists: list[list[str]] = [[] for _ in prompts]
        backend = TransformersBackend(settings)
        try:
            async with backend:
                for start in range(0, len(order), c.batch_size):
                    batch = order[start : start + c.batch_size]
                    out = await backend.generate([prompts[i] for i in batch])
                    for i, queries in zip(batch, out, strict=True):
                        lists[i] = queries
        except (BackendUnavailable, BackendRejected) as exc:
            raise TrainingError(f"{self.name}: generation failed: {exc}") from exc
        self.stats = backend.stats
        self.model_seconds = backend.model_seconds
        return lists


def zero_shot_smollm2(
    config: PredictorConfig | None = None, folder: Path | None = None
) -> tuple[ModelPredictor, float]:
    """The zero-shot SmolLM2-135M-Instruct predictor, and the seconds spent converting its
    GGUF in this call (0.0 when the converted folder was cached)."""
    from training.smollm2 import ensure_folder

    converted = ensure_folder(folder)
    predictor = ModelPredictor(
        "smollm2-135m zero-shot",
        converted.path,
        compressed=False,
        chat=True,
        config=config or PredictorConfig(),
    )
    return predictor, converted.convert_seconds
