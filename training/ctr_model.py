"""The CTR model: p(click | user, query, position, context), small enough to train on a CPU.

Read top to bottom: config, encoding (rows -> tensors), the network, the model (score, save,
load), training, publishing.

The network: an embedding of the user's hash bucket, one word table shared by two mean bags
(the query's words and the user's recent words, plus their dot product: does the query
speak of what the user just did?), embeddings of the position and the recall source, and the
standardised dense features of :mod:`training.ctr_features`, all concatenated into a
two-layer MLP that gives one logit. Trained with binary cross-entropy (AdamW, seeded).

A trained model is a folder: ``model.pt`` (the weights, with the dense features' mean and
standard deviation), ``ctr.json`` (the :class:`CtrConfig`, feature sizes included) and
``popularity.json`` (the training days' :class:`~training.ctr_features.Popularity` table).
:func:`train` writes it into a reserved registry version; :func:`publish` makes it current
(the trainer publishes only a candidate that is not worse); :func:`load_ctr` reads it back.
"""

from __future__ import annotations

import json
import shutil
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from aigq.events import MAX_SHOWN_QUERIES
from aigq.registry import ModelRef, Registry
from training import TrainingError
from training.ctr_data import CtrExample
from training.ctr_features import (
    DENSE_NAMES,
    SOURCES,
    FeatureConfig,
    Popularity,
    dense_features,
    fit_popularity,
    position_id,
    prefix_popularity,
    query_word_ids,
    recent_word_ids,
    source_id,
    user_bucket,
)

CTR_NAME = "aigq-ctr"
WEIGHTS, CONFIG, POPULARITY = "model.pt", "ctr.json", "popularity.json"
Log = Callable[[str], None]


@dataclass(frozen=True)
class CtrConfig:
    """One CTR training run. Defaults: a few minutes on a 2-core CPU for ~1M rows."""

    name: str = CTR_NAME
    """registry name the model is reserved (and published) under"""
    epochs: int = 2
    """passes over the training rows"""
    batch_size: int = 1024
    lr: float = 3e-3
    """AdamW learning rate (constant)"""
    weight_decay: float = 1e-6
    seed: int = 0
    """seeds the initial weights and the batch order: the same rows give the same model"""
    threads: int = 0
    """torch CPU threads (0: torch's default)"""
    user_dim: int = 16
    word_dim: int = 32
    position_dim: int = 8
    source_dim: int = 4
    hidden: int = 64
    """width of the MLP's first layer (the second is half of it)"""
    features: FeatureConfig = field(default_factory=FeatureConfig)

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise TrainingError("epochs and batch_size must be >= 1")
        if self.lr <= 0 or self.weight_decay < 0:
            raise TrainingError("lr must be > 0 and weight_decay >= 0")
        dims = ("user_dim", "word_dim", "position_dim", "source_dim", "hidden")
        if min(getattr(self, name) for name in dims) < 2:
            raise TrainingError(f"{', '.join(dims)} must be >= 2")
        if self.threads < 0:
            raise TrainingError(f"threads must be >= 0, got {self.threads}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CtrConfig:
        return cls(**{**data, "features": FeatureConfig(**data["features"])})


# ---------------------------------------------------------------------------- encoding
@dataclass(frozen=True)
class Encoded:
    """Rows as tensors: ids padded with 0, dense numbers raw (the network standardises)."""

    user: Tensor  # [n]
    query: Tensor  # [n, query_words]
    recent: Tensor  # [n, recent_words]
    position: Tensor  # [n]
    source: Tensor  # [n]
    dense: Tensor  # [n, len(DENSE_NAMES)]
    label: Tensor  # [n], float

    def __len__(self) -> int:
        return int(self.user.shape[0])

    def take(self, index: Tensor | slice) -> Encoded:
        """The rows at ``index`` (a slice, or a tensor of row numbers)."""
        return Encoded(*(getattr(self, f.name)[index] for f in fields(self)))


def _padded(ids: list[int], width: int, out: array[int]) -> None:
    out.extend(ids[:width])
    out.extend([0] * (width - min(len(ids), width)))


def _tensor(values: array[Any], dtype: torch.dtype, *shape: int) -> Tensor:
    """The array's values as a tensor sharing its memory (ids as int32: half of int64)."""
    if not values:
        return torch.zeros(shape, dtype=dtype)
    return torch.frombuffer(values, dtype=dtype).view(shape)


def encode(
    rows: Sequence[CtrExample],
    table: Popularity,
    config: FeatureConfig,
    counts: Sequence[tuple[int, int]] | None = None,
) -> Encoded:
    """The rows' features (:mod:`training.ctr_features`); each query's popularity from
    ``counts`` (one per row) or else from ``table``. A context's recent words are hashed
    once, however many rows share it."""
    users, positions, sources = array("i"), array("i"), array("i")
    query, recent, dense = array("i"), array("i"), array("f")
    recent_of: dict[int, list[int]] = {}
    for i, row in enumerate(rows):
        context = row.context
        users.append(user_bucket(context.user_id, config))
        positions.append(position_id(row.position))
        sources.append(source_id(row.source))
        _padded(query_word_ids(row.query, config), config.query_words, query)
        ids = recent_of.get(id(context))
        if ids is None:
            ids = recent_of[id(context)] = recent_word_ids(context.recent, config)
        _padded(ids, config.recent_words, recent)
        popular = counts[i] if counts is not None else table.of(row.query)
        dense.extend(dense_features(row, popular, table, config))
    n = len(rows)
    labels = array("f", (float(row.label) for row in rows))
    return Encoded(
        _tensor(users, torch.int32, n),
        _tensor(query, torch.int32, n, config.query_words),
        _tensor(recent, torch.int32, n, config.recent_words),
        _tensor(positions, torch.int32, n),
        _tensor(sources, torch.int32, n),
        _tensor(dense, torch.float32, n, len(DENSE_NAMES)),
        _tensor(labels, torch.float32, n),
    )


# ---------------------------------------------------------------------------- network
class CtrNet(nn.Module):
    """Embeddings + standardised dense features -> MLP -> one logit (module docstring)."""

    dense_mean: Tensor
    dense_std: Tensor

    def __init__(self, config: CtrConfig) -> None:
        super().__init__()
        f = config.features
        self.user = nn.Embedding(f.user_buckets, config.user_dim)
        self.words = nn.EmbeddingBag(f.word_buckets, config.word_dim, mode="mean", padding_idx=0)
        self.position = nn.Embedding(MAX_SHOWN_QUERIES, config.position_dim)
        self.source = nn.Embedding(len(SOURCES) + 1, config.source_dim)
        self.register_buffer("dense_mean", torch.zeros(len(DENSE_NAMES)))
        self.register_buffer("dense_std", torch.ones(len(DENSE_NAMES)))
        width = (config.user_dim + 2 * config.word_dim + 1 + config.position_dim
                 + config.source_dim + len(DENSE_NAMES))  # fmt: skip
        self.mlp = nn.Sequential(
            nn.Linear(width, config.hidden),
            nn.ReLU(),
            nn.Linear(config.hidden, config.hidden // 2),
            nn.ReLU(),
            nn.Linear(config.hidden // 2, 1),
        )

    def forward(self, x: Encoded) -> Tensor:
        query, recent = self.words(x.query), self.words(x.recent)
        match = (query * recent).sum(dim=1, keepdim=True)
        dense = (x.dense - self.dense_mean) / self.dense_std
        parts = [self.user(x.user), query, recent, match, self.position(x.position),
                 self.source(x.source), dense]  # fmt: skip
        out: Tensor = self.mlp(torch.cat(parts, dim=1)).squeeze(1)
        return out


# ---------------------------------------------------------------------------- model
class CtrModel:
    """A trained network with its config and popularity table: what scores rows."""

    def __init__(self, net: CtrNet, config: CtrConfig, popularity: Popularity) -> None:
        self.net, self.config, self.popularity = net, config, popularity

    def score(self, rows: Sequence[CtrExample], batch_size: int = 8192) -> list[float]:
        """p(click) of each row (labels are ignored), in the rows' order."""
        if not rows:
            return []
        encoded = encode(rows, self.popularity, self.config.features)
        return self.score_encoded(encoded, batch_size)

    def score_encoded(self, encoded: Encoded, batch_size: int = 8192) -> list[float]:
        self.net.eval()
        out: list[float] = []
        with torch.no_grad():
            for start in range(0, len(encoded), batch_size):
                batch = encoded.take(slice(start, start + batch_size))
                out += torch.sigmoid(self.net(batch)).tolist()
        return out

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(self.net.state_dict(), folder / WEIGHTS)
        (folder / CONFIG).write_text(json.dumps(self.config.to_json(), indent=2))
        (folder / POPULARITY).write_text(json.dumps(self.popularity.to_json()))


def load_ctr(path: Path) -> CtrModel:
    """The model saved in folder ``path`` (a registry version's, or any)."""
    try:
        config = CtrConfig.from_json(json.loads((path / CONFIG).read_text()))
        popularity = Popularity.from_json(json.loads((path / POPULARITY).read_text()))
        state = torch.load(path / WEIGHTS, map_location="cpu", weights_only=True)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise TrainingError(f"{path} is not a CTR model folder: {exc}") from exc
    net = CtrNet(config)
    net.load_state_dict(state)
    return CtrModel(net, config, popularity)


# ---------------------------------------------------------------------------- training
@dataclass
class TrainedCtr:
    """A model trained into a reserved, unpublished registry version."""

    ref: ModelRef
    model: CtrModel
    metrics: dict[str, float]


def fit(rows: Sequence[CtrExample], config: CtrConfig, log: Log = lambda _: None) -> CtrModel:
    """Train a new model on ``rows`` (their popularity seen as of each row's time:
    :func:`~training.ctr_features.prefix_popularity`)."""
    if not rows or not any(row.label for row in rows) or all(row.label for row in rows):
        raise TrainingError("training rows need both clicked and unclicked examples")
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    table = fit_popularity(rows)
    data = encode(rows, table, config.features, prefix_popularity(rows))
    net = CtrNet(config)
    net.dense_mean.copy_(data.dense.mean(dim=0))
    net.dense_std.copy_(data.dense.std(dim=0).clamp_min(1e-6))
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    loss_fn = nn.BCEWithLogitsLoss()
    order = torch.Generator().manual_seed(config.seed)
    net.train()
    for epoch in range(config.epochs):
        total, batches = 0.0, 0
        perm = torch.randperm(len(data), generator=order)
        for start in range(0, len(data), config.batch_size):
            batch = data.take(perm[start : start + config.batch_size])
            loss = loss_fn(net(batch), batch.label)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, batches = total + loss.item(), batches + 1
        log(f"epoch {epoch + 1}/{config.epochs}: train log-loss {total / batches:.4f}")
    return CtrModel(net, config, table)


def train(
    rows: Sequence[CtrExample], config: CtrConfig, registry: Registry, log: Log = lambda _: None
) -> TrainedCtr:
    """Train on ``rows`` and save the model into a newly reserved version of
    ``config.name``, unpublished (:func:`publish` or :func:`discard` it)."""
    started = time.perf_counter()
    model = fit(rows, config, log)
    seconds = time.perf_counter() - started
    ref = registry.reserve(config.name)
    model.save(ref.path)
    params = sum(p.numel() for p in model.net.parameters())
    metrics = {"train_rows": float(len(rows)), "train_seconds": seconds, "params": float(params)}
    return TrainedCtr(ref, model, metrics)


def publish(
    registry: Registry, trained: TrainedCtr, data: dict[str, Any], metrics: dict[str, Any]
) -> ModelRef:
    """Make the trained version current (its manifest: kind ``ctr``, data, config, metrics)."""
    manifest = {
        "kind": "ctr",
        "data": data,
        "config": trained.model.config.to_json(),
        "metrics": {**trained.metrics, **metrics},
        "dense_features": list(DENSE_NAMES),
    }
    return registry.publish(trained.ref, manifest)


def discard(trained: TrainedCtr) -> None:
    """Remove an unpublished version's folder (a candidate that was not good enough)."""
    if (trained.ref.path / "manifest.json").exists():
        raise TrainingError(f"{trained.ref.tag} is published; it is not discarded")
    shutil.rmtree(trained.ref.path, ignore_errors=True)
