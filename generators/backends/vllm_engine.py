"""vLLM's engine in this process (``AsyncLLM``): no HTTP hop, for a generator image with vLLM.

vLLM and this project's streaming stack cannot share one environment everywhere (vLLM 0.32
wants click >= 8.4 through huggingface-hub, faust-streaming 0.15 wants click < 8.4), so this
backend is imported only when asked for and says plainly when vLLM is missing. The
server backend (``vllm-http``) is the default and the one the tests run on the CPU.

No hot reload: :meth:`~generators.backends.base.Backend.swap` raises ReloadUnsupported (an
announced version is served after a restart); the server backend takes adapters at run time.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any

from aigq.errors import ConfigError
from generators.backends.base import Backend, BackendUnavailable, output_regex
from generators.settings import GeneratorSettings


class VllmEngineBackend(Backend):
    name = "vllm"

    def __init__(self, settings: GeneratorSettings) -> None:
        super().__init__(settings)
        try:
            from vllm import SamplingParams
            from vllm.engine.arg_utils import AsyncEngineArgs
            from vllm.sampling_params import StructuredOutputsParams
            from vllm.v1.engine.async_llm import AsyncLLM
        except ImportError as exc:
            raise ConfigError(
                "AIGQ_GENERATE_BACKEND=vllm needs vLLM importable in this environment; "
                "use vllm-http with a vLLM server instead"
            ) from exc
        structured = (
            StructuredOutputsParams(regex=output_regex(settings.k, settings.max_query_chars))
            if settings.structured
            else None
        )
        self._params = SamplingParams(
            n=settings.n,
            max_tokens=settings.max_tokens,
            temperature=settings.temperature,
            top_p=settings.top_p,
            structured_outputs=structured,
            skip_special_tokens=False,  # copy tokens (<h2>) are special: the parser expands them
        )
        self._engine: Any = AsyncLLM.from_engine_args(
            AsyncEngineArgs(
                model=settings.model, tokenizer=str(settings.model_path or settings.model)
            )
        )

    async def _one(self, prompt: str) -> list[str]:
        final: Any = None
        async for output in self._engine.generate(prompt, self._params, uuid.uuid4().hex):
            final = output
        if final is None:
            raise BackendUnavailable("vLLM engine returned nothing")
        return [c.text for c in sorted(final.outputs, key=lambda c: c.index)]

    async def complete(self, prompts: Sequence[str]) -> list[list[str]]:
        # The engine batches concurrent requests itself (continuous batching).
        try:
            return list(
                await asyncio.wait_for(
                    asyncio.gather(*(self._one(p) for p in prompts)), self.settings.timeout_s
                )
            )
        except TimeoutError as exc:
            raise BackendUnavailable(f"generation took over {self.settings.timeout_s} s") from exc

    async def aclose(self) -> None:
        self._engine.shutdown()
