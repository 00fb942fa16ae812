"""The fault suite's fixtures: the tiny model and the vLLM server the generator tests use
(imported from their conftest, so that there is one definition of each)."""

from __future__ import annotations

from tests.generators.conftest import tiny_model, vllm_server

__all__ = ["tiny_model", "vllm_server"]
