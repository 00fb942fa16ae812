"""Generation backends behind one interface; :func:`open_backend` picks one from settings."""

from __future__ import annotations

from generators.backends.base import (
    Backend,
    BackendRejected,
    BackendUnavailable,
    Generated,
    ReloadFailed,
    ReloadUnsupported,
)
from generators.settings import GeneratorSettings

__all__ = [
    "Backend",
    "BackendRejected",
    "BackendUnavailable",
    "Generated",
    "ReloadFailed",
    "ReloadUnsupported",
    "open_backend",
]


def open_backend(settings: GeneratorSettings) -> Backend:
    """The backend ``settings.backend`` names (heavy imports happen only for the one chosen)."""
    if settings.backend == "vllm-http":
        from generators.backends.openai_http import OpenAIHttpBackend

        return OpenAIHttpBackend(settings)
    if settings.backend == "vllm":
        from generators.backends.vllm_engine import VllmEngineBackend

        return VllmEngineBackend(settings)
    from generators.backends.hf import TransformersBackend

    return TransformersBackend(settings)
