"""Plain transformers generation: the fallback where vLLM cannot run (no vLLM, odd CPU).

The model is loaded once; each batch is generated in a worker thread (PyTorch releases the
GIL in its kernels), one batch at a time, with left padding so that every prompt's
continuation starts at the same column. ``n`` > 1 samples with ``num_return_sequences``.
No constrained decoding here: the output validation does all the policing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from generators.backends.base import Backend, BackendUnavailable
from generators.settings import GeneratorSettings


class TransformersBackend(Backend):
    name = "transformers"

    def __init__(self, settings: GeneratorSettings) -> None:
        super().__init__(settings)
        self._model: Any = None
        self._tokenizer: Any = None
        self._lock = asyncio.Lock()

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        s = self.settings
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(s.model_path or s.model))
            model = AutoModelForCausalLM.from_pretrained(s.model, dtype=torch.float32)
        except (OSError, ValueError) as exc:
            raise BackendUnavailable(f"cannot load model {s.model!r}: {exc}") from exc
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self._model = model.to(s.device).eval()  # type: ignore[arg-type]
        self._tokenizer = tokenizer

    def _complete(self, prompts: Sequence[str]) -> list[list[str]]:
        import torch

        if self._model is None:
            self._load()
        s, tokenizer = self.settings, self._tokenizer
        inputs = tokenizer(list(prompts), return_tensors="pt", padding=True).to(s.device)
        sample = s.temperature > 0
        with torch.inference_mode():
            output = self._model.generate(
                **inputs,
                max_new_tokens=s.max_tokens,
                do_sample=sample,
                temperature=s.temperature if sample else None,
                top_p=s.top_p if sample else None,
                num_return_sequences=s.n,
                pad_token_id=tokenizer.pad_token_id,
            )
        texts = tokenizer.batch_decode(
            output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=False
        )  # copy tokens (<h2>) are special: the parser expands them, and drops EOS and padding
        return [texts[i * s.n : (i + 1) * s.n] for i in range(len(prompts))]

    async def complete(self, prompts: Sequence[str]) -> list[list[str]]:
        async with self._lock:  # one batch at a time: they would only fight for the cores
            try:
                return await asyncio.wait_for(
                    asyncio.to_thread(self._complete, prompts), self.settings.timeout_s
                )
            except TimeoutError as exc:
                raise BackendUnavailable(
                    f"generation took over {self.settings.timeout_s} s"
                ) from exc
