"""Plain transformers generation: the fallback where vLLM cannot run (no vLLM, odd CPU).

The model is loaded on the first batch; each batch is generated in a worker thread (PyTorch
releases the GIL in its kernels), one batch at a time, with left padding so that every prompt's
continuation starts at the same column. ``n`` > 1 samples with ``num_return_sequences``.
No constrained decoding here: the output validation does all the policing.

**Swapping the model** (:meth:`TransformersBackend.swap`): the new model and tokenizer are
loaded in a worker thread *outside* the batch lock, so generation goes on meanwhile; then, under
the lock, the one reference to (model, tokenizer, version) is replaced. A batch takes that
reference once, under the lock, so it finishes on the model it started with and its lists name
that model's version; the next batch uses the new one. A load that fails changes nothing.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from generators.backends.base import (
    Backend,
    BackendUnavailable,
    ReloadFailed,
    ReloadUnsupported,
)
from generators.settings import GeneratorSettings

# One load at a time in this process: transformers imports its classes lazily and builds a
# model through process-wide state (empty weights on the meta device), so two threads loading
# at once (the first batch's load and a swap's) fail (ImportError, meta tensors). Generating
# while a model loads is fine.
_LOADING = threading.Lock()


class _Loaded(NamedTuple):
    """What one batch generates with: replaced as a whole, never piece by piece."""

    model: Any
    tokenizer: Any
    version: str


class TransformersBackend(Backend):
    name = "transformers"

    def __init__(self, settings: GeneratorSettings) -> None:
        super().__init__(settings)
        self._loaded: _Loaded | None = None
        self._lock = asyncio.Lock()

    def _load(self, model_path: str, tokenizer_path: str, adapter: bool = False) -> tuple[Any, Any]:
        """(model, tokenizer) from folders (or hub names); runs in a worker thread."""
        with _LOADING:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            try:
                tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
                if adapter:  # a LoRA adapter over its base (adapter_config.json), merged
                    from peft import AutoPeftModelForCausalLM

                    model = AutoPeftModelForCausalLM.from_pretrained(
                        model_path, torch_dtype=torch.float32
                    ).merge_and_unload()
                else:
                    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
            except (OSError, ValueError) as exc:
                raise BackendUnavailable(f"cannot load model {model_path!r}: {exc}") from exc
            tokenizer.padding_side = "left"
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
            return model.to(self.settings.device).eval(), tokenizer

    def _complete(self, loaded: _Loaded, prompts: Sequence[str]) -> list[list[str]]:
        import torch

        s, model, tokenizer = self.settings, loaded.model, loaded.tokenizer
        inputs = tokenizer(list(prompts), return_tensors="pt", padding=True).to(s.device)
        sample = s.temperature > 0
        with torch.inference_mode():
            output = model.generate(
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
        return (await self.complete_versioned(prompts))[0]

    async def complete_versioned(self, prompts: Sequence[str]) -> tuple[list[list[str]], str]:
        async with self._lock:  # one batch at a time: they would only fight for the cores
            if self._loaded is None:  # the first batch loads the configured model
                s = self.settings
                model, tokenizer = await asyncio.to_thread(
                    self._load, s.model, str(s.model_path or s.model)
                )
                self._loaded = _Loaded(model, tokenizer, self.model_version)
            loaded = self._loaded  # model and version taken together
            try:
                texts = await asyncio.wait_for(
                    asyncio.to_thread(self._complete, loaded, prompts), self.settings.timeout_s
                )
            except TimeoutError as exc:
                raise BackendUnavailable(
                    f"generation took over {self.settings.timeout_s} s"
                ) from exc
            return texts, loaded.version

    async def swap(self, path: Path, version: str, adapter: bool = False) -> None:
        if adapter and importlib.util.find_spec("peft") is None:
            raise ReloadUnsupported(
                f"{version} is a LoRA adapter: the transformers backend needs peft to load it "
                "(pip install 'aigq-nearline[train]'), or publish the merged model"
            )
        tokenizer = _tokenizer_folder(path) if adapter else str(path)
        try:  # outside the lock: batches go on generating on the current model meanwhile
            model, tokenizer = await asyncio.to_thread(self._load, str(path), tokenizer, adapter)
        except Exception as exc:  # whatever the load raised, the current model stays
            raise ReloadFailed(f"{version} at {path} did not load: {exc!r}") from exc
        async with self._lock:
            self._loaded = _Loaded(model, tokenizer, version)
            self.model_version = version


def _tokenizer_folder(adapter: Path) -> str:
    """Where an adapter version's tokenizer is: beside it, else its base model's."""
    if (adapter / "tokenizer_config.json").is_file():
        return str(adapter)
    try:
        config = json.loads((adapter / "adapter_config.json").read_text())
        return str(config["base_model_name_or_path"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ReloadFailed(f"{adapter}: no tokenizer, and no base named in its config") from exc
